"""flowviz.core.lotrow.timestamp: the constructor value large answers use for Timestamp fields
sets what Timestamp.FromDatetime sets (a naive time is UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from flowviz.core.lotrow import timestamp

TIMES = [
    datetime(2026, 12, 3, 16, 5, 1, 250000, tzinfo=UTC),
    datetime(2026, 12, 3, 16, 5, 1, 999999),  # naive: UTC
    datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(1969, 7, 20, 20, 17, 40, 500, tzinfo=UTC),  # before the epoch: nanos stay positive
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


@pytest.mark.parametrize("at", TIMES, ids=str)
def test_the_same_as_from_datetime(at: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(at)
    assert Timestamp(**timestamp(at)) == expected
    assert Timestamp(**timestamp(at)).ToDatetime(tzinfo=UTC) == (at if at.tzinfo else at.replace(tzinfo=UTC))
