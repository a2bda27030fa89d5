"""Users and tokens (the lots service owns the users table)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import grpc

from flowviz.core import audit, auth, keys, paging, passwords, validation
from flowviz.core.errors import Conflict, InvalidArgument, NotFound, Unavailable
from flowviz.core.identity import caller_name
from flowviz.core.ratelimit import LoginThrottle, TooManyAttempts, address_key, username_key
from flowviz.core.server import Resources
from flowviz.lots.v1 import lots_pb2
from services.lots import repository

Context = grpc.aio.ServicerContext[Any, Any]
# The database refuses to disable, demote or delete the last active admin (migration 0007).
LAST_ADMIN_SQLSTATE = "FV001"


def user_message(row: asyncpg.Record) -> lots_pb2.User:
    user = lots_pb2.User(
        username=row["username"], display_name=row["display_name"], role=row["role"], disabled=row["disabled"]
    )
    user.created_at.FromDatetime(row["created_at"])
    return user


GATEWAY = auth.SERVICE_PREFIX + "gateway"


def client_address(metadata: Any, peer: str, verifier: auth.TokenVerifier) -> str:
    """The address to throttle a login by: the x-client-address the gateway passes, but only when
    the call carries the gateway's own service identity; any other caller is keyed by its peer."""
    forwarded = next((v for k, v in metadata if k == "x-client-address"), None)
    token = auth.bearer(metadata)
    if not (forwarded and isinstance(forwarded, str) and token):
        return peer
    try:
        identity = verifier.verify(token)
    except auth.Unauthenticated:
        return peer
    return forwarded if identity.subject == GATEWAY else peer


class Users:
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        cfg = resources.settings
        # Only this service holds the user-token private key; it refuses to start without it.
        self.signing_key = keys.token_signing_key(cfg.token_private_key, cfg.token_public_key)
        self.verifier = auth.TokenVerifier(
            auth.TrustedKeys(cfg.token_public_key, cfg.service_public_keys), max_lifetime=cfg.token_ttl
        )
        valkey = self._valkey
        # Per user: a few free tries. Per address: more, since many people may share one (NAT).
        self.user_throttle = LoginThrottle(valkey, free=5)
        self.address_throttle = LoginThrottle(valkey, free=50)

    def _valkey(self) -> Any:
        cache = getattr(self.r, "cache", None)  # set once the service is up
        return None if cache is None else cache.client

    async def issue_token(
        self, request: lots_pb2.IssueTokenRequest, context: Context
    ) -> lots_pb2.IssueTokenResponse:
        client = client_address(context.invocation_metadata() or (), context.peer(), self.verifier)
        if not request.username or not request.password:
            missing = "username" if not request.username else "password"
            raise InvalidArgument("FIELD_REQUIRED", f"{missing} is required", field=missing)
        limits = (
            (self.user_throttle, username_key(request.username)),
            (self.address_throttle, address_key(client)),
        )
        for throttle, key in limits:
            if (wait := await throttle.wait(key)) is not None:
                raise TooManyAttempts.after(wait)
        # A name that cannot exist is looked up as nobody (same cost: the dummy hash is verified).
        row = (
            await repository.user_credentials(self.r.pool, request.username)
            if validation.USERNAME.fullmatch(request.username)
            else None
        )
        ok = await passwords.verify_password_async(
            row["password_hash"] if row else None, request.password[:1024]
        )
        if not ok or row is None or row["disabled"]:
            for throttle, key in limits:
                await throttle.failure(key)
            raise auth.Unauthenticated("LOGIN_FAILED", "wrong username or password, or the user is disabled")
        await self.user_throttle.success(limits[0][1])
        if passwords.needs_rehash(row["password_hash"]):  # parameters changed since it was set
            new_hash = await passwords.hash_password_async(request.password, username=request.username)
            await repository.set_password_hash(self.r.pool, row["id"], new_hash)
        cfg = self.r.settings
        # Read now, not from the 1 s memory: a token must not start out revoked.
        generation = await self.r.revocations.generation(request.username, fresh=True)
        token = auth.issue_token(
            request.username,
            row["role"],
            key=self.signing_key,
            ttl_seconds=cfg.token_ttl,
            generation=generation,
        )
        return lots_pb2.IssueTokenResponse(
            access_token=token,
            token_type="Bearer",
            expires_in=cfg.token_ttl,
            role=row["role"],
            session_expires_in=cfg.session_max_hours * 3600,
        )

    async def refresh_token(
        self, request: lots_pb2.RefreshTokenRequest, context: Context
    ) -> lots_pb2.IssueTokenResponse:
        """A new token for the caller, keeping their session's start: the session (and so every
        token refreshed from it) ends FLOWVIZ_SESSION_MAX_HOURS after the password was given."""
        identity = auth.current_identity.get()
        assert identity is not None and not identity.is_service  # the policy lets users only
        cfg = self.r.settings
        now = int(time.time())
        started = int(identity.session_start)
        remaining = started + cfg.session_max_hours * 3600 - now
        if remaining < 1:
            raise auth.Unauthenticated(
                "SESSION_EXPIRED",
                f"the session began more than {cfg.session_max_hours} hours ago; sign in with your password",
            )
        name = identity.subject
        row = await repository.get_user(self.r.pool, name)
        # Read now, not from the 1 s memory: a revoked token must not buy a fresh one.
        generation = await self.r.revocations.generation(name, fresh=True)
        if row is None or row["disabled"] or identity.generation < generation:
            raise auth.Unauthenticated("TOKEN_REVOKED", "the access token was revoked; sign in again")
        ttl = min(cfg.token_ttl, remaining)
        token = auth.issue_token(
            name,
            row["role"],
            key=self.signing_key,
            ttl_seconds=ttl,
            generation=generation,
            session_start=started,
        )
        return lots_pb2.IssueTokenResponse(
            access_token=token,
            token_type="Bearer",
            expires_in=ttl,
            role=row["role"],
            session_expires_in=remaining,
        )

    async def logout(self, request: lots_pb2.LogoutRequest, context: Context) -> lots_pb2.LogoutResponse:
        """End every token of the caller: their token generation moves on (revocation.py), so each
        process refuses them from its next request (within the 1 s memory)."""
        name = caller_name()
        if not await self.r.revocations.revoke(name):
            # Not told: the tokens would live on to their expiry, so say it failed.
            raise Unavailable(
                "SIGN_OUT_UNAVAILABLE", "could not sign out now (the cache is unreachable); try again",
                retry_after_seconds=1,
            )  # fmt: skip
        async with self.r.pool.acquire() as conn:
            await audit.record(conn, "logout", "user", name)
        return lots_pb2.LogoutResponse(signed_out=True)

    async def _user(self, name: str) -> lots_pb2.User:
        row = await repository.get_user(self.r.pool, name)
        if row is None:
            raise NotFound("USER_NOT_FOUND", f"user {name} does not exist")
        return user_message(row)

    async def create_user(
        self, request: lots_pb2.CreateUserRequest, context: Context
    ) -> lots_pb2.CreateUserResponse:
        name = validation.username(request.username)
        password_hash = await passwords.hash_password_async(request.password, username=name)
        display = validation.text(request.display_name, "display_name", required=False)
        async with self.r.pool.acquire() as conn, conn.transaction():  # a taken name: USER_EXISTS
            await repository.insert_user(conn, name, display, validation.role(request.role), password_hash)
            await audit.record(conn, "create", "user", name, role=request.role)
        return lots_pb2.CreateUserResponse(user=await self._user(name))

    async def list_users(
        self, request: lots_pb2.ListUsersRequest, context: Context
    ) -> lots_pb2.ListUsersResponse:
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: repository.list_users(self.r.pool, after, limit),
        )
        return lots_pb2.ListUsersResponse(users=[user_message(r) for r in rows], next_page_token=token)

    async def update_user(
        self, request: lots_pb2.UpdateUserRequest, context: Context
    ) -> lots_pb2.UpdateUserResponse:
        name = validation.username(request.username)
        new_role = validation.role(request.role) if request.role else ""
        display = validation.text(request.display_name, "display_name", required=False)
        disabled = request.disabled if request.HasField("disabled") else None
        if len(request.current_password) > passwords.MAX_LENGTH:
            raise InvalidArgument(
                "FIELD_INVALID", f"current_password is at most {passwords.MAX_LENGTH} characters",
                field="current_password",
            )  # fmt: skip
        password_hash = ""
        if request.password:
            if name == caller_name():  # a stolen token alone must not take over the account
                await self._check_current_password(name, request.current_password)
            password_hash = await passwords.hash_password_async(request.password, username=name)
        try:
            async with self.r.pool.acquire() as conn, conn.transaction():
                before = await repository.user_for_update(conn, name)
                if before is None or not await repository.update_user(
                    conn, name, display, new_role, password_hash, disabled
                ):
                    raise NotFound("USER_NOT_FOUND", f"user {name} does not exist")
                # What ends the user's tokens so far: disabled, another role, a new password.
                revoke = bool(
                    password_hash
                    or (disabled and not before["disabled"])
                    or (new_role and new_role != before["role"])
                )
                await audit.record(
                    conn,
                    "update",
                    "user",
                    name,
                    role=new_role,
                    disabled=disabled,
                    password_changed=bool(password_hash),
                )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != LAST_ADMIN_SQLSTATE:
                raise
            change = "disabled" if disabled else f"made {new_role}"
            raise Conflict(
                "LAST_ADMIN",
                f"{name} is the last active administrator and cannot be {change}; make another user admin first",
                field="disabled" if disabled else "role",
                username=name,
            ) from None
        if revoke:  # after the commit; in every process within a second (revocation.py)
            await self.r.revocations.revoke(name)
        return lots_pb2.UpdateUserResponse(user=await self._user(name))

    async def _check_current_password(self, name: str, current: str) -> None:
        """Raise unless `current` is the user's password (throttled like a login)."""
        if not current:
            raise InvalidArgument(
                "CURRENT_PASSWORD_REQUIRED",
                "current_password is required to change your own password",
                field="current_password",
            )
        key = username_key(name)
        if (wait := await self.user_throttle.wait(key)) is not None:
            raise TooManyAttempts.after(wait)
        row = await repository.user_credentials(self.r.pool, name)
        if not await passwords.verify_password_async(row["password_hash"] if row else None, current):
            await self.user_throttle.failure(key)
            raise InvalidArgument(
                "CURRENT_PASSWORD_WRONG", "current_password is not your password", field="current_password"
            )
        await self.user_throttle.success(key)
