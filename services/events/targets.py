"""Where a webhook may go: server-side request forgery checks (issue 16).

A target is an http(s) URL whose every address is public, unless
FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE=1 lets loopback, private and link-local ones through (tests, a
plant's own network). Cloud metadata addresses are refused always. The check runs when the
subscription is made and again before every attempt, after DNS: the attempt connects to the
address that was checked, so a name that re-resolves elsewhere (rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
MAX_URL = 2048
RESOLVE_SECONDS = 2.0


class TargetRefused(ValueError):
    """The URL or one of its addresses may not be a webhook target; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    url: SplitResult
    host: str
    port: int


def parse(url: str) -> Target:
    """The URL's parts, or TargetRefused."""
    if not url or len(url) > MAX_URL or any(ord(c) <= 32 for c in url):
        raise TargetRefused(f"must be an http(s) URL of at most {MAX_URL} characters, without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("must be an http:// or https:// URL")
    if not parts.hostname:
        raise TargetRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry credentials (the signature proves who sends)")
    if parts.fragment:
        raise TargetRefused("must not have a #fragment")
    return Target(parts, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def refusal(address: IP, allow_private: bool) -> str | None:
    """Why `address` may not be a target, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a host address"
    if address.is_global:
        return None
    if allow_private and (address.is_loopback or address.is_private or address.is_link_local):
        return None
    for word, test in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
    ):
        if test:
            return f"{address} is a {word} address (FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE=1 allows it)"
    return f"{address} is not a public address"


async def _resolve(target: Target) -> list[IP]:
    try:
        return [ipaddress.ip_address(target.host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), RESOLVE_SECONDS
        )
    except (OSError, TimeoutError) as exc:
        raise TargetRefused(f"host {target.host} does not resolve ({exc})") from None
    # An IPv6 answer may carry a zone ("fe80::1%eth0"): the address is what is checked.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


async def addresses(target: Target, allow_private: bool, loopback_only: bool = False) -> list[IP]:
    """Every address of the target's host, each checked; TargetRefused if one is refused (a name
    whose answers mix public and private ones is refused whole) or it does not resolve. With
    `loopback_only`, only loopback addresses, and no DNS."""
    if loopback_only:
        try:
            ipaddress.ip_address(target.host)
        except ValueError:
            raise TargetRefused(
                f"host {target.host}: names are not looked up here (FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY=1)"
            ) from None
    found = await _resolve(target)
    if not found:
        raise TargetRefused(f"host {target.host} does not resolve")
    for address in found:
        if (why := refusal(address, allow_private)) is not None:
            raise TargetRefused(f"host {target.host}: {why}")
        if loopback_only and not address.is_loopback:
            raise TargetRefused(
                f"host {target.host}: only loopback targets here (FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY=1)"
            )
    return found


async def check(url: str, allow_private: bool, loopback_only: bool = False) -> tuple[Target, IP]:
    """The parsed target and the checked address to connect to."""
    target = parse(url)
    return target, (await addresses(target, allow_private, loopback_only))[0]
