"""flowviz/core/ratelimit.py: login throttling (progressive delays, never a lockout) and its keys."""

from __future__ import annotations

import pytest

from flowviz.core.ratelimit import LoginThrottle, TooManyAttempts, address_key, username_key

# --- login throttling --------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_throttle_delays_progressively_and_never_locks() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(lambda: None, free=3, base_delay=1, max_delay=8, window_seconds=300, clock=clock)
    for _ in range(2):
        assert await throttle.wait("user:alice") is None
        assert await throttle.failure("user:alice") is None
    assert await throttle.failure("user:alice") == 1  # the third: the next attempt waits 1 s
    assert await throttle.wait("user:alice") == pytest.approx(1)
    assert await throttle.wait("user:bob") is None  # other keys unaffected
    clock.now += 1
    assert await throttle.wait("user:alice") is None  # after the wait, an attempt is tried
    assert [await throttle.failure("user:alice") for _ in range(4)] == [2, 4, 8, 8]  # doubling, capped
    clock.now += 8
    assert await throttle.wait("user:alice") is None
    await throttle.success("user:alice")
    assert await throttle.failure("user:alice") is None  # forgotten


async def test_throttle_forgets_after_the_window_and_stays_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(lambda: None, free=1, window_seconds=100, max_local_entries=10, clock=clock)
    assert await throttle.failure("k") == 1
    clock.now += 101
    assert await throttle.wait("k") is None and len(throttle._local) == 0
    for i in range(50):
        await throttle.failure(f"k{i}")
    assert len(throttle._local) == 10


def test_throttle_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        LoginThrottle(lambda: None, free=0)
    with pytest.raises(ValueError):
        LoginThrottle(lambda: None, free=1, base_delay=2, max_delay=1)


def test_keys() -> None:
    assert username_key("  Alice ") == "user:alice"
    assert address_key("ipv4:203.0.113.7:51234") == "addr:203.0.113.7"
    assert address_key("203.0.113.7:8000") == "addr:203.0.113.7"
    assert address_key("203.0.113.7") == "addr:203.0.113.7"
    assert address_key("ipv6:[2001:db8:1:2:3:4:5:6]:443") == "addr:2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff::1") == "addr:2001:db8:1:2::/64"
    assert address_key("ipv6:[::ffff:203.0.113.7]:1") == "addr:203.0.113.7"
    assert address_key("unix:/tmp/sock") == "addr:unix:/tmp/sock"
    err = TooManyAttempts.after(0.2)
    assert err.reason == "LOGIN_THROTTLED" and err.metadata == {"retry_after_seconds": "1"}
