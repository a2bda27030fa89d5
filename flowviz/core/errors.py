"""Domain errors and their one mapping to gRPC status (google.rpc.ErrorInfo, AIP-193).

Servicers raise a DomainError; the server interceptor turns it into a status with a
machine-readable reason. The gateway reads the reason back with `from_rpc_error` and
maps the gRPC code to HTTP with its own single table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "flowviz"


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items()}


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Conflict(DomainError):
    """A state conflict: the request is valid but the data forbids it now."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


def to_status(err: DomainError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=getattr(code_pb2, err.code.name), message=err.message, details=[detail])
    return rpc_status.to_status(status)


@dataclass
class RpcFailure:
    """What a client learned from a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def from_rpc_error(err: grpc.aio.AioRpcError) -> RpcFailure:
    failure = RpcFailure(code=err.code(), message=err.details() or err.code().name)
    trailing: Any = err.trailing_metadata() or ()
    for key, value in trailing:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                failure.reason = info.reason
                failure.metadata = dict(info.metadata)
    return failure
