"""Exceptions for the status codes weightcast's calls end with (gRPC's codes, as absl::Status
carries them). Each holds the server's message; `code` is the code's name ("NOT_FOUND")."""


class Error(Exception):
    """Any weightcast failure. `code`: the status code's name; `message`: the server's text."""

    code = "UNKNOWN"

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return f"{self.code}: {self.message}"


class Cancelled(Error):
    code = "CANCELLED"


class InvalidArgument(Error, ValueError):
    code = "INVALID_ARGUMENT"


class DeadlineExceeded(Error, TimeoutError):
    code = "DEADLINE_EXCEEDED"


class NotFound(Error, LookupError):
    code = "NOT_FOUND"


class AlreadyExists(Error):
    code = "ALREADY_EXISTS"


class PermissionDenied(Error, PermissionError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(Error):
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(Error):
    code = "FAILED_PRECONDITION"


class Aborted(Error):
    code = "ABORTED"


class OutOfRange(Error):
    code = "OUT_OF_RANGE"


class Unimplemented(Error, NotImplementedError):
    code = "UNIMPLEMENTED"


class Internal(Error):
    code = "INTERNAL"


class Unavailable(Error, ConnectionError):
    code = "UNAVAILABLE"


class DataLoss(Error):
    code = "DATA_LOSS"


class Unauthenticated(Error, PermissionError):
    code = "UNAUTHENTICATED"


# absl::StatusCode numbers (the same as gRPC's).
_BY_CODE = {1: Cancelled, 2: Error, 3: InvalidArgument, 4: DeadlineExceeded, 5: NotFound, 6: AlreadyExists,
            7: PermissionDenied, 8: ResourceExhausted, 9: FailedPrecondition, 10: Aborted, 11: OutOfRange,
            12: Unimplemented, 13: Internal, 14: Unavailable, 15: DataLoss, 16: Unauthenticated}


def from_status(code, message):
    """The exception for an absl/gRPC status code (called by the C++ module)."""
    return _BY_CODE.get(code, Error)(message)
