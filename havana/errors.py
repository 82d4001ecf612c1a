"""The one exception type meant for users: its message is a sentence saying what is wrong and what to do."""


class HavanaError(Exception):
    """A user mistake or a missing input; the CLI prints the message alone, without a traceback, and exits 2."""
