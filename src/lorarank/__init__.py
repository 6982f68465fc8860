"""lorarank: how does LoRA rank change what a fine-tune learns, and what it costs?"""

__version__ = "0.1.0"
