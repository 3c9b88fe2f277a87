"""Errors raised for bad user input (the CLI maps them to exit code 2)."""


class AnyGenInputError(ValueError):
    """Bad input: the message names the argument and the fix."""
