"""Row and message conversions: timestamps exact to the microsecond, idempotency fingerprints."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from closedloop.server.api.convert import request_fingerprint, timestamp
from closedloop.v1 import alert_pb2


@pytest.mark.parametrize("value", [
    dt.datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc),
    dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.timezone.utc),
    dt.datetime(2030, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.datetime(2026, 3, 1, 8, 30),  # naive: taken as UTC
])
def test_timestamp_matches_protobuf(value):
    expected = Timestamp()
    expected.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    assert timestamp(value) == expected


def test_fingerprint_ignores_output_only_fields_and_sees_the_rest():
    sent = alert_pb2.Alert(model_id="m", type="drift", severity=2, metrics={"x": 1.0})
    echoed = alert_pb2.Alert()
    echoed.CopyFrom(sent)
    echoed.id, echoed.state, echoed.rule_set_version = "7", alert_pb2.ALERT_STATE_ACTIONED, 3
    echoed.create_time.seconds = 100
    echoed.actions.add(rule="r")
    assert request_fingerprint(sent) == request_fingerprint(echoed)
    other = alert_pb2.Alert()
    other.CopyFrom(sent)
    other.metrics["x"] = 2.0
    assert request_fingerprint(sent) != request_fingerprint(other)
    # Map order does not matter: the serialisation is deterministic.
    a = alert_pb2.Alert(model_id="m", type="t", severity=1, labels={"a": "1", "b": "2"})
    b = alert_pb2.Alert(model_id="m", type="t", severity=1, labels={"b": "2", "a": "1"})
    assert request_fingerprint(a) == request_fingerprint(b)
