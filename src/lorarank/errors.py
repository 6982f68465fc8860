"""The one exception type that reaches the user as a clean message.

Anything the user can fix (a bad path, a bad rank, an unknown key) raises `UserError` with a message
that says what is wrong and how to fix it. The CLI prints it on one line per problem, without a
traceback, and exits with code 2. Every other exception is a bug and keeps its traceback.
"""

EXIT_USAGE = 2  # bad input: the user can fix it
EXIT_TRIALS_FAILED = 3  # the sweep ran, but some trials failed or diverged


class UserError(Exception):
    """A problem in the user's input; the message must say how to fix it."""
