"""flowviz.events.v1.EventsService: webhook subscriptions, their delivery log, and the
dispatcher that delivers the outbox's events to them (dispatcher.py). Admin only.

Its own process: it is the only one that makes outbound HTTP requests, so a slow receiver or a
flood of retries never competes with the services that answer the plant's users, and it can be
scaled or stopped on its own while events keep accruing in the outbox.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc

from flowviz.core import audit, auth, outbox, paging, validation
from flowviz.core.errors import InvalidArgument, NotFound
from flowviz.core.identity import caller_name
from flowviz.core.server import Resources
from flowviz.events.v1 import events_pb2, events_pb2_grpc
from services.events import payloads, repository, signing, targets
from services.events.dispatcher import Dispatcher

Context = grpc.aio.ServicerContext[Any, Any]
FORMATS = ("native", "epcis")
STATUSES = ("pending", "delivered", "failed")

P = "/flowviz.events.v1.EventsService/"
POLICY: auth.Policy = {
    P + name: auth.ADMIN_ONLY
    for name in (
        "CreateSubscription",
        "ListSubscriptions",
        "GetSubscription",
        "PauseSubscription",
        "ResumeSubscription",
        "DeleteSubscription",
        "ListDeliveries",
        "Redeliver",
    )
}


def subscription_message(row: asyncpg.Record) -> events_pb2.Subscription:
    message = events_pb2.Subscription(
        id=row["id"],
        target_url=row["target_url"],
        event_types=row["event_types"],
        product=row["product"],
        kind=row["kind"],
        stream_code=row["stream_code"],
        format=row["format"],
        paused=row["paused"],
        created_by=row["created_by"],
        pending=row["pending"],
        failed=row["failed"],
    )
    message.created_at.FromDatetime(row["created_at"])
    return message


def delivery_message(row: asyncpg.Record) -> events_pb2.Delivery:
    message = events_pb2.Delivery(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        lot_code=row["lot_code"],
        status=row["status"],
        attempts=row["attempts"],
        last_status_code=row["last_status_code"] or 0,
        last_error=row["last_error"],
        last_latency_ms=row["last_latency_ms"] or 0.0,
    )
    for name in ("last_attempt_at", "delivered_at", "created_at", "occurred_at"):
        if row[name] is not None:
            getattr(message, name).FromDatetime(row[name])
    if row["status"] == "pending":
        message.next_attempt_at.FromDatetime(row["next_attempt_at"])
    return message


def _id(value: int, field: str = "id") -> int:
    if value <= 0:
        raise InvalidArgument("ID_INVALID", f"{field} must be a positive id", field=field)
    return value


class EventsServicer(events_pb2_grpc.EventsServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        self.dispatcher = Dispatcher(resources)

    async def _subscription(self, sub_id: int) -> asyncpg.Record:
        row = await repository.subscription(self.r.pool, _id(sub_id))
        if row is None:
            raise NotFound("SUBSCRIPTION_NOT_FOUND", f"subscription {sub_id} does not exist", id=sub_id)
        return row

    async def CreateSubscription(
        self, request: events_pb2.CreateSubscriptionRequest, context: Context
    ) -> events_pb2.CreateSubscriptionResponse:
        url = request.target_url.strip()
        try:
            await targets.check(
                url, self.r.settings.webhooks_allow_private, self.r.settings.webhooks_loopback_only
            )
        except targets.TargetRefused as exc:
            raise InvalidArgument("TARGET_REFUSED", f"target_url {exc}", field="target_url") from None
        types = list(dict.fromkeys(request.event_types))
        if not types:
            raise InvalidArgument(
                "FIELD_REQUIRED",
                f"event_types is required: any of {', '.join(outbox.TYPES)}",
                field="event_types",
            )
        if unknown := [t for t in types if t not in outbox.TYPES]:
            raise InvalidArgument(
                "EVENT_TYPE_UNKNOWN",
                f"event_types: {', '.join(unknown)} unknown; known: {', '.join(outbox.TYPES)}",
                field="event_types",
            )
        product = validation.text(request.product, "product", required=False, max_len=validation.TEXT_MAX)
        kind = validation.kind(request.kind) if request.kind else ""
        stream = validation.code(request.stream_code, "stream_code") if request.stream_code else ""
        fmt = request.format or "native"
        if fmt not in FORMATS:
            raise InvalidArgument("FORMAT_INVALID", "format must be native or epcis", field="format")
        if fmt == "epcis" and (other := [t for t in types if t not in payloads.EPCIS_EVENT]):
            raise InvalidArgument(
                "EVENT_TYPE_NOT_EPCIS",
                f"event_types: {', '.join(other)} have no EPCIS event; epcis subscriptions take "
                + ", ".join(payloads.EPCIS_EVENT),
                field="event_types",
            )
        secret = signing.new_secret()
        async with self.r.pool.acquire() as conn, conn.transaction():
            sub_id = await conn.fetchval(
                repository.INSERT_SUBSCRIPTION, url, types, product, kind, stream, fmt, secret, caller_name()
            )
            await audit.record(
                conn,
                "create",
                "event_subscription",
                str(sub_id),
                target_url=url,
                event_types=types,
                product=product,
                kind=kind,
                stream_code=stream,
                format=fmt,
            )
        self.dispatcher.wake()
        return events_pb2.CreateSubscriptionResponse(
            subscription=subscription_message(await self._subscription(sub_id)), secret=secret
        )

    async def ListSubscriptions(
        self, request: events_pb2.ListSubscriptionsRequest, context: Context
    ) -> events_pb2.ListSubscriptionsResponse:
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: repository.subscriptions(self.r.pool, after, limit),
        )
        return events_pb2.ListSubscriptionsResponse(
            subscriptions=[subscription_message(r) for r in rows], next_page_token=token
        )

    async def GetSubscription(
        self, request: events_pb2.GetSubscriptionRequest, context: Context
    ) -> events_pb2.GetSubscriptionResponse:
        return events_pb2.GetSubscriptionResponse(
            subscription=subscription_message(await self._subscription(request.id))
        )

    async def _set_paused(self, sub_id: int, paused: bool) -> events_pb2.Subscription:
        await self._subscription(sub_id)
        async with self.r.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE event_subscriptions SET paused = $2 WHERE id = $1", sub_id, paused)
            await audit.record(conn, "pause" if paused else "resume", "event_subscription", str(sub_id))
        self.dispatcher.wake()
        return subscription_message(await self._subscription(sub_id))

    async def PauseSubscription(
        self, request: events_pb2.PauseSubscriptionRequest, context: Context
    ) -> events_pb2.PauseSubscriptionResponse:
        return events_pb2.PauseSubscriptionResponse(subscription=await self._set_paused(request.id, True))

    async def ResumeSubscription(
        self, request: events_pb2.ResumeSubscriptionRequest, context: Context
    ) -> events_pb2.ResumeSubscriptionResponse:
        return events_pb2.ResumeSubscriptionResponse(subscription=await self._set_paused(request.id, False))

    async def DeleteSubscription(
        self, request: events_pb2.DeleteSubscriptionRequest, context: Context
    ) -> events_pb2.DeleteSubscriptionResponse:
        row = await self._subscription(request.id)
        async with self.r.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM event_subscriptions WHERE id = $1", row["id"])
            await audit.record(
                conn, "delete", "event_subscription", str(row["id"]), target_url=row["target_url"]
            )
        self.dispatcher.wake()
        return events_pb2.DeleteSubscriptionResponse()

    async def ListDeliveries(
        self, request: events_pb2.ListDeliveriesRequest, context: Context
    ) -> events_pb2.ListDeliveriesResponse:
        row = await self._subscription(request.id)
        if request.status and request.status not in STATUSES:
            raise InvalidArgument(
                "STATUS_INVALID", f"status must be one of {', '.join(STATUSES)}", field="status"
            )
        rows, token = await paging.fetch_page(
            request.page_size,
            request.page_token,
            lambda after, limit: repository.deliveries(self.r.pool, row["id"], request.status, after, limit),
        )
        return events_pb2.ListDeliveriesResponse(
            deliveries=[delivery_message(r) for r in rows], next_page_token=token
        )

    async def Redeliver(
        self, request: events_pb2.RedeliverRequest, context: Context
    ) -> events_pb2.RedeliverResponse:
        sub = await self._subscription(request.id)
        delivery_id = _id(request.delivery_id, "delivery_id")
        async with self.r.pool.acquire() as conn, conn.transaction():
            updated = await conn.execute(
                "UPDATE event_deliveries SET status = 'pending', next_attempt_at = now(), lease_until = NULL "
                "WHERE subscription_id = $1 AND id = $2",
                sub["id"],
                delivery_id,
            )
            if updated == "UPDATE 0":
                raise NotFound(
                    "DELIVERY_NOT_FOUND",
                    f"subscription {sub['id']} has no delivery {delivery_id}",
                    id=sub["id"],
                    delivery_id=delivery_id,
                )
            await audit.record(
                conn, "redeliver", "event_delivery", str(delivery_id), subscription_id=sub["id"]
            )
        self.dispatcher.wake(sub["id"])
        found = await repository.delivery(self.r.pool, sub["id"], delivery_id)
        assert found is not None
        return events_pb2.RedeliverResponse(delivery=delivery_message(found))


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    servicer = EventsServicer(resources)
    resources.on_start.append(servicer.dispatcher.start)
    resources.on_close.append(servicer.dispatcher.close)
    events_pb2_grpc.add_EventsServiceServicer_to_server(servicer, server)
    return [events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name]
