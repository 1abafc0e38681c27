"""The one exception tree of berth.

    BerthError                  every error a user can act on; str() is the one line they see
     ├── NotFound               no such image, container, file, ...
     ├── AlreadyExists          a name or record is taken
     ├── InvalidArgument        a flag value, reference or input that cannot be right
     ├── Conflict               the object is in a state that forbids the operation (in use, running)
     ├── FailedPrecondition     the host cannot do it (not root, kernel feature missing)
     ├── Unavailable            a resource is busy or temporarily unreachable
     ├── DataLoss               stored or received content is corrupt (digest mismatch)
     └── ContainerStartError    the container's process could not be started
          └── CommandNotFound   its command does not exist or cannot be executed (exit 127/126)

Lower layers raise these with context (``raise NotFound(...) from exc``); only the CLI
(and later the API server) translates them, into an exit code or an HTTP status.
"""

from __future__ import annotations


class BerthError(Exception):
    """Base of every error berth reports to a user."""

    exit_code = 125  # docker's code for "the engine itself failed"


class NotFound(BerthError):
    pass


class AlreadyExists(BerthError):
    pass


class InvalidArgument(BerthError):
    pass


class Conflict(BerthError):
    pass


class FailedPrecondition(BerthError):
    pass


class Unavailable(BerthError):
    pass


class DataLoss(BerthError):
    pass


class ContainerStartError(BerthError):
    """The runtime could not start the container's process."""


class CommandNotFound(ContainerStartError):
    """Docker's exit codes: 127 when the command does not exist, 126 when it cannot be run."""

    def __init__(self, message: str, exit_code: int = 127) -> None:
        super().__init__(message)
        self.exit_code = exit_code
