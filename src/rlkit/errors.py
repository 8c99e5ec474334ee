"""One exception family whose messages are written for the user.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``;
a traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class RlkitError(Exception):
    """Base of every error rlkit expects; the message is shown to the user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class BadInputError(RlkitError):
    """The user's input is wrong: usage, a config file, the address file."""

    exit_code = 2


class ConfigError(BadInputError):
    """A training or sweep config does not validate."""


class AddressFileError(BadInputError):
    """~/.ray_address (or RLKIT_RAY_ADDRESS_FILE) cannot be read as written."""


class UnknownClusterError(BadInputError):
    """A cluster name that the registry does not hold."""


class WorkFailedError(RlkitError):
    """The work itself failed (a cluster did not start, a job failed)."""

    exit_code = 1


class PartialFailureError(RlkitError):
    """Some of several clusters failed while others succeeded."""

    exit_code = 3
