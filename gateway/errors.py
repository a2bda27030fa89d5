"""The gateway's errors: the one table from gRPC status to HTTP status, the one handler from
anything an endpoint raises to its answer (`failure`), and the JSON error body."""

from __future__ import annotations

import grpc
import orjson
from starlette.responses import Response

from flowviz.core.errors import DomainError, RpcFailure, from_rpc_error
from flowviz.core.protojson import JsonInputError
from gateway.uploads import UploadError

HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Reasons whose HTTP status differs from their gRPC code's default.
HTTP_OF_REASON = {"IDEMPOTENCY_KEY_REUSED": 422, "BODY_TOO_LARGE": 413}


class Unauthorized(Exception):
    """No valid bearer token."""

    def __init__(self, reason: str, message: str = "a valid bearer token is required") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class BadRequest(Exception):
    def __init__(self, reason: str, message: str, status: int = 400, field: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.details = {"field": field} if field else None


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


def error_response(
    status: int, code: str, message: str, reason: str = "", metadata: dict[str, str] | None = None
) -> Response:
    body: dict[str, object] = {"code": code, "reason": reason or code, "message": message}
    if metadata:
        body["details"] = metadata
    return Response(orjson.dumps({"error": body}), status_code=status, media_type="application/json")


def failure_response(failure: RpcFailure) -> Response:
    status = HTTP_OF_REASON.get(failure.reason) or HTTP_OF_GRPC.get(failure.code, 502)
    message = failure.message
    if status == 502:  # INTERNAL, UNKNOWN, DATA_LOSS: say so without leaking internals
        message = "an upstream service failed; the request id identifies it in the logs"
    response = error_response(status, failure.code.name, message, failure.reason, failure.metadata)
    if status == 401:
        response.headers["www-authenticate"] = 'Bearer realm="flowviz"'
    if status == 429 and (wait := failure.metadata.get("retry_after_seconds")):
        response.headers["retry-after"] = wait
    if status == 503:  # an outage (database, a service starting or gone): worth retrying soon
        response.headers["retry-after"] = failure.metadata.get("retry_after_seconds", "1")
    return response


def failure(exc: BaseException) -> Response | None:
    """The answer to what an endpoint raised (None: not a refusal; a bug, left to the 500 handler)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return failure_response(from_rpc_error(exc))
    if isinstance(exc, BadRequest):
        return error_response(exc.status, "INVALID_ARGUMENT", exc.message, exc.reason, exc.details)
    if isinstance(exc, JsonInputError):
        return error_response(
            400, "INVALID_ARGUMENT", f"{exc.field} {exc.message}", "FIELD_INVALID", {"field": exc.field}
        )
    if isinstance(exc, Unauthorized):
        response = error_response(401, "UNAUTHENTICATED", exc.message, exc.reason)
        response.headers["www-authenticate"] = 'Bearer realm="flowviz"'
        return response
    if isinstance(exc, DomainError):  # checked in the gateway itself (an upload's role, a token)
        return failure_response(RpcFailure(exc.code, exc.message, exc.reason, exc.metadata))
    if isinstance(exc, UploadError):
        return error_response(exc.status, "INVALID_ARGUMENT", exc.message, exc.reason)
    if isinstance(exc, ClientGone):
        return error_response(499, "CANCELLED", "the client closed the request", "CLIENT_CLOSED")
    return None
