"""The one exception type that reaches users as a single clear sentence."""


class UserError(ValueError):
    """Bad input from a user: the CLI prints the message and exits with code 2."""
