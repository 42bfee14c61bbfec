"""One exception type whose message is the single line a user sees."""


class AmxforgeError(Exception):
    """A problem the user can fix: the message names it and says what to do. Exit code 2 on the CLI."""

    exit_code = 2
