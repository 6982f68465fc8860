import sys

from lorarank.cli import main

sys.exit(main())
