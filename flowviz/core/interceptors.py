"""The two server interceptors every service runs, each with one job (the kserve way).

`StatusInterceptor` (outer) turns whatever a call raised into the status the caller sees:
domain errors with their ErrorInfo, another service's answer as it was, database refusals by
the one constraint table, outages as 503. `AuthInterceptor` (inner) sets the request id,
refuses calls until the service is ready, and authenticates and authorizes the caller by the
service's policy (every method not listed as public needs a token whose role the policy
allows: fail closed). Its refusals are domain errors, so the outer one maps them too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from flowviz.core import auth, db, heavy, logs
from flowviz.core.constraints import database_error
from flowviz.core.errors import DomainError, Unavailable, to_status

if TYPE_CHECKING:
    from flowviz.core.server import Resources

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
# Open to probes and tools whatever the service's state.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# Codes from a call to another service that the caller should see as they are.
_PASSED_ON = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)


def _around(
    handler: Any,
    method: str,
    before: Callable[[Context], Awaitable[Callable[[], None] | None]] | None,
    fail: Callable[[Context, BaseException], Awaitable[None]] | None,
) -> Any:
    """`handler` with `before` awaited ahead of it (what it returns is called when the call
    ends) and `fail` given what it raises (re-raised when there is no `fail`), for each of the
    three kinds of method flowviz serves."""

    def done(after: Callable[[], None] | None) -> None:
        if after is not None:
            after()

    async def failed(context: Context, exc: BaseException) -> None:
        if fail is None:
            raise exc
        await fail(context, exc)

    if handler.unary_unary:
        behavior: Any = handler.unary_unary

        async def unary(request: Any, context: Context) -> Any:
            after = None
            try:
                if before is not None:
                    after = await before(context)
                return await behavior(request, context)
            except BaseException as exc:
                await failed(context, exc)
            finally:
                done(after)

        return grpc.unary_unary_rpc_method_handler(
            unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        stream_behavior: Any = handler.unary_stream

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            after = None
            try:
                if before is not None:
                    after = await before(context)
                async for item in stream_behavior(request, context):
                    yield item
            except BaseException as exc:
                await failed(context, exc)
            finally:
                done(after)

        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        upload_behavior: Any = handler.stream_unary

        async def upload(requests: Any, context: Context) -> Any:
            after = None
            try:
                if before is not None:
                    after = await before(context)
                return await upload_behavior(requests, context)
            except BaseException as exc:
                await failed(context, exc)
            finally:
                done(after)

        return grpc.stream_unary_rpc_method_handler(
            upload, handler.request_deserializer, handler.response_serializer
        )
    # No bidirectional streams here: refuse rather than serve one unguarded.
    raise RuntimeError(f"{method}: stream-stream methods are not supported")


async def _abort(context: Context, err: DomainError) -> None:
    status = to_status(err)
    await context.abort(status.code, status.details, status.trailing_metadata)


class StatusInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """What a call raised, as the status its caller sees (the one mapping, AIP-193)."""

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler

        async def fail(context: Context, exc: BaseException) -> None:
            if isinstance(exc, grpc.aio.AbortError):  # raised by context.abort(): already a status
                raise exc
            if isinstance(exc, DomainError):
                await _abort(context, exc)
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PASSED_ON:
                # Another service's answer (unavailable, too slow, ...) stays what it was.
                # With its ErrorInfo (reason, retry_after_seconds): abort() takes a tuple, not Metadata.
                trailing: Any = tuple(exc.trailing_metadata() or ())
                await context.abort(exc.code(), exc.details() or exc.code().name, trailing)
            if (refused := database_error(exc)) is not None:
                await _abort(context, refused)
            if db.is_outage(exc):  # the server went away mid-call: its transaction is rolled back
                await _abort(context, db.unavailable())
            if isinstance(exc, asyncpg.QueryCanceledError):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the query was cancelled")
            if isinstance(exc, asyncio.CancelledError):
                raise exc
            log.exception("unhandled error", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return _around(handler, method, None, fail)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request id and deadline in; calls refused until the service is ready; the caller
    authenticated, then authorized by the service's policy; a user's heavy calls bounded."""

    def __init__(self, resources: Resources, policy: auth.Policy, public: frozenset[str]) -> None:
        self.resources = resources
        self.policy = policy
        self.public = public
        cfg = resources.settings
        self.verifier = auth.TokenVerifier(
            auth.TrustedKeys(cfg.token_public_key, cfg.service_public_keys), max_lifetime=cfg.token_ttl
        )

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = details.invocation_metadata or ()
        rid = next((v for k, v in metadata if k == "x-request-id"), None)
        resources = self.resources
        public = method in self.public
        token = None if public else auth.bearer(metadata)

        is_heavy = method in heavy.HEAVY_METHODS and resources.settings.heavy_calls > 0

        async def guard(context: Context) -> Callable[[], None] | None:
            """Checks before the call; what gives back the heavy-call lease it took, if any."""
            logs.request_id.set(logs.accept_request_id(rid))
            left = context.time_remaining()
            # Every query of this call: statement_timeout below this deadline (db.py).
            db.call_deadline.set(None if left is None else time.monotonic() + left)
            if not resources.ready:
                raise Unavailable(
                    "NOT_READY", f"{resources.name} is starting or draining", retry_after_seconds=1
                )
            if public:
                return None
            identity = self.verifier.verify(token) if token else None
            if identity is not None and not identity.is_service:
                # Authentication, before authorization: a revoked token is a 401, not a 403.
                current = await resources.revocations.generation(identity.subject)
                if identity.generation < current:
                    raise auth.Unauthenticated(
                        "TOKEN_REVOKED",
                        "the access token was revoked (disabled, role or password changed); sign in again",
                    )
            auth.current_identity.set(auth.check(self.policy, method, identity))
            if is_heavy and identity is not None and not identity.is_service:
                # The lease outlives the call's deadline by a little, then expires by itself.
                lease = await resources.heavy_calls.acquire(
                    identity.subject, (600.0 if left is None else left) + 5.0
                )
                return lambda: resources.heavy_calls.release(lease)
            return None

        return _around(handler, method, guard, None)


def interceptors(resources: Resources, policy: auth.Policy, public: frozenset[str]) -> list[Any]:
    """A service's interceptors, outermost first: status mapping around authentication."""
    return [StatusInterceptor(), AuthInterceptor(resources, policy, public)]
