"""Errors a user can cause. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what was given, where, and what is allowed."""

    exit_code = 2


class BadOption(UserError):
    """A command-line option outside its allowed values."""

    def __init__(self, option: str, value: object, allowed: str):
        super().__init__(f"{option}: {value!r} is not allowed; {allowed}")
