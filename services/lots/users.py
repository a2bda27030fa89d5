"""Users and tokens (the lots service owns the users table)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import grpc

from flowviz.core import audit, auth, paging, passwords, validation
from flowviz.core.errors import AlreadyExists, InvalidArgument, NotFound
from flowviz.core.ratelimit import LoginLimiter, TooManyAttempts, address_key, username_key
from flowviz.core.server import Resources
from flowviz.lots.v1 import lots_pb2
from services.lots import repository

Context = grpc.aio.ServicerContext[Any, Any]
USERNAME = re.compile(r"^[a-z0-9_.-]{1,64}$")


def username(value: str) -> str:
    if not USERNAME.match(value):
        raise InvalidArgument("USERNAME_INVALID", "username must be 1-64 of a-z 0-9 _ . -", field="username")
    return value


def role(value: str) -> str:
    if value not in auth.USER_ROLES:
        raise InvalidArgument(
            "ROLE_INVALID", f"role must be one of {', '.join(auth.USER_ROLES)}", field="role"
        )
    return value


def user_message(row: asyncpg.Record) -> lots_pb2.User:
    user = lots_pb2.User(
        username=row["username"], display_name=row["display_name"], role=row["role"], disabled=row["disabled"]
    )
    user.created_at.FromDatetime(row["created_at"])
    return user


class Users:
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        # Per user: a few tries. Per address: more, since many people may share one (NAT).
        self.user_limiter = LoginLimiter(max_failures=5)
        self.address_limiter = LoginLimiter(max_failures=50)

    async def issue_token(
        self, request: lots_pb2.IssueTokenRequest, context: Context
    ) -> lots_pb2.IssueTokenResponse:
        # The gateway passes the client's address; a direct caller is keyed by its own peer.
        client = dict(context.invocation_metadata() or ()).get("x-client-address") or context.peer()
        if not request.username or not request.password:
            raise InvalidArgument("FIELD_REQUIRED", "username and password are required")
        limits = (
            (self.user_limiter, username_key(request.username)),
            (self.address_limiter, address_key(str(client))),
        )
        for limiter, key in limits:
            if (wait := limiter.check(key)) is not None:
                raise TooManyAttempts.after(wait)
        # A name that cannot exist is looked up as nobody (same cost: the dummy hash is verified).
        row = (
            await repository.user_credentials(self.r.pool, request.username)
            if USERNAME.match(request.username)
            else None
        )
        ok = await passwords.verify_password_async(
            row["password_hash"] if row else None, request.password[:1024]
        )
        if not ok or row is None or row["disabled"]:
            waits = [w for limiter, key in limits if (w := limiter.failure(key)) is not None]
            if waits:
                raise TooManyAttempts.after(max(waits))
            raise auth.Unauthenticated("LOGIN_FAILED", "wrong username or password, or the user is disabled")
        self.user_limiter.success(limits[0][1])
        if passwords.needs_rehash(row["password_hash"]):  # parameters changed since it was set
            new_hash = await passwords.hash_password_async(request.password, username=request.username)
            await repository.set_password_hash(self.r.pool, row["id"], new_hash)
        cfg = self.r.settings
        token = auth.issue_token(
            request.username, row["role"], secret=cfg.token_secret, ttl_seconds=cfg.token_ttl
        )
        return lots_pb2.IssueTokenResponse(
            access_token=token, token_type="Bearer", expires_in=cfg.token_ttl, role=row["role"]
        )

    async def _user(self, name: str) -> lots_pb2.User:
        row = await repository.get_user(self.r.pool, name)
        if row is None:
            raise NotFound("USER_NOT_FOUND", f"user {name} does not exist")
        return user_message(row)

    async def create_user(
        self, request: lots_pb2.CreateUserRequest, context: Context
    ) -> lots_pb2.CreateUserResponse:
        name = username(request.username)
        password_hash = await passwords.hash_password_async(request.password, username=name)
        display = validation.text(request.display_name, "display_name", required=False)
        try:
            async with self.r.pool.acquire() as conn, conn.transaction():
                await repository.insert_user(conn, name, display, role(request.role), password_hash)
                await audit.record(conn, "create", "user", name, role=request.role)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("USER_EXISTS", f"user {name} already exists") from None
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
        name = username(request.username)
        password_hash = (
            await passwords.hash_password_async(request.password, username=name) if request.password else ""
        )
        disabled = request.disabled if request.HasField("disabled") else None
        async with self.r.pool.acquire() as conn, conn.transaction():
            found = await repository.update_user(
                conn, name, validation.text(request.display_name, "display_name", required=False),
                role(request.role) if request.role else "", password_hash, disabled,
            )  # fmt: skip
            if not found:
                raise NotFound("USER_NOT_FOUND", f"user {name} does not exist")
            await audit.record(
                conn,
                "update",
                "user",
                name,
                role=request.role,
                disabled=disabled,
                password_changed=bool(password_hash),
            )
        return lots_pb2.UpdateUserResponse(user=await self._user(name))
