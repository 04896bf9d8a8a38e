"""Times enter the API truncated to the microsecond (common.proto, README "Proto style notes")."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from closedloop.server.api.convert import from_timestamp, timestamp

UTC = dt.timezone.utc


def test_nanoseconds_are_truncated_toward_the_past():
    t = from_timestamp(Timestamp(seconds=1_700_000_000, nanos=123_456_999))
    assert t == dt.datetime.fromtimestamp(1_700_000_000, UTC).replace(microsecond=123_456)
    # Before 1970 too: nanos count forward from the (negative) second, so truncation is still downward.
    early = from_timestamp(Timestamp(seconds=-1, nanos=999_999_999))
    assert early == dt.datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def test_a_time_round_trips_as_its_microseconds():
    for seconds, nanos in [(0, 0), (1_700_000_000, 5_000), (1_700_000_000, 999_999_999), (-86_400, 1)]:
        back = timestamp(from_timestamp(Timestamp(seconds=seconds, nanos=nanos)))
        assert (back.seconds, back.nanos) == (seconds, nanos // 1000 * 1000)
