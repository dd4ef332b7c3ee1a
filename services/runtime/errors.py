"""Domain errors of the workers; one interceptor maps them to gRPC status codes."""

import grpc


class WorkerError(Exception):
    """An error whose message is safe to show to the caller."""

    code = grpc.StatusCode.INTERNAL
    # Sent as trailing metadata `torchgate-error` when set, for callers that must tell causes apart.
    reason = ""


class InvalidInput(WorkerError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(WorkerError):
    code = grpc.StatusCode.NOT_FOUND


class Overloaded(WorkerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(WorkerError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExpired(WorkerError):
    """The caller's deadline passed while its request waited in the queue: overload, not a fault."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "queue_expired"


class ModelNotFound(Exception):
    """The configured model cannot be found without the network (a start-up failure, not a request error)."""
