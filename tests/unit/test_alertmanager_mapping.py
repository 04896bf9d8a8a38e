"""The Alertmanager receiver's mapping from labels and annotations to a closedloop alert: pure logic."""

from __future__ import annotations

import pytest

from closedloop.server.errors import InvalidArgument
from closedloop.server.http.alertmanager import Mapping, map_alert, map_payload, snake_case
from closedloop.v1 import common_pb2


def raw(labels=None, annotations=None, **fields):
    return {"status": "firing", "fingerprint": "abc123", "startsAt": "2026-01-02T03:04:05Z",
            "labels": {"alertname": "ModelDrift", "model_id": "fx-1", **(labels or {})},
            "annotations": annotations or {}, **fields}


def test_defaults_type_from_alertname_severity_medium_value_as_type_score():
    mapped, problems = map_alert(raw(annotations={"value": "0.31", "metric_psi": "0.2", "summary": "x"},
                                     labels={"Desk": "fx"}), 0, Mapping())
    assert problems == []
    alert = mapped.request.alert
    assert (alert.model_id, alert.type, alert.severity) == ("fx-1", "model_drift", common_pb2.SEVERITY_MEDIUM)
    assert dict(alert.metrics) == {"model_drift_score": 0.31, "psi": 0.2}
    assert dict(alert.labels) == {"alertname": "ModelDrift", "desk": "fx"}
    assert mapped.request.request_id == "am:abc123:2026-01-02T03:04:05Z"
    assert alert.source == "alertmanager" and alert.observe_time.ToJsonString() == "2026-01-02T03:04:05Z"


def test_labels_name_type_severity_and_metric():
    mapped, _ = map_alert(raw({"type": "performance", "severity": "CRITICAL", "metric": "performance_drop"},
                              {"value": "0.12"}), 0, Mapping())
    alert = mapped.request.alert
    assert (alert.type, alert.severity, dict(alert.metrics)) == (
        "performance", common_pb2.SEVERITY_CRITICAL, {"performance_drop": 0.12})
    assert "type" not in alert.labels and "metric" not in alert.labels


def test_a_configured_mapping():
    mapping = Mapping(model_label="model", type_label="kind", severity_label="prio", value_annotation="score",
                      metric_label="what")
    mapped, problems = map_alert(raw({"model": "eq-2", "kind": "risk", "prio": "page"}, {"score": "91"}), 0, mapping)
    assert problems == []
    alert = mapped.request.alert
    assert (alert.model_id, alert.type, alert.severity, dict(alert.metrics)) == (
        "eq-2", "risk", common_pb2.SEVERITY_CRITICAL, {"risk_score": 91.0})


@pytest.mark.parametrize("alert, field", [
    (raw(labels={"model_id": ""}), "alerts[3].labels.model_id"),
    (raw(labels={"severity": "urgent"}), "alerts[3].labels.severity"),
    (raw(annotations={"value": "NaN"}), "alerts[3].annotations.value"),
    (raw(annotations={"metric_x": "high"}), "alerts[3].annotations.metric_x"),
    (raw(startsAt="yesterday"), "alerts[3].startsAt"),
    (raw(status="pending"), "alerts[3].status"),
    (raw(fingerprint=""), "alerts[3].fingerprint"),
    (raw(labels={"model_id": "bad id!"}), "alerts[3].alert.model_id"),
    (raw(labels={"alertname": "!!!"}), "alerts[3].alert.type"),
])
def test_unmappable_alerts_name_the_field(alert, field):
    mapped, problems = map_alert(alert, 3, Mapping())
    assert mapped is None and field in [p.field for p in problems], problems


def test_resolved_alerts_need_only_their_identity():
    mapped, problems = map_alert({"status": "resolved", "fingerprint": "f", "startsAt": "2026-01-02T03:04:05Z",
                                  "labels": {}}, 0, Mapping())
    assert problems == [] and mapped.status == "resolved" and mapped.request.request_id == "am:f:2026-01-02T03:04:05Z"


def test_payload_is_all_or_nothing():
    with pytest.raises(InvalidArgument) as err:
        map_payload({"version": "4", "alerts": [raw(), raw(labels={"model_id": ""})]}, Mapping())
    assert [v.field for v in err.value.violations] == ["alerts[1].labels.model_id"]
    assert "1 of 2 alert(s) cannot be mapped; nothing was stored" in err.value.message
    for payload, field in (([], "body"), ({"version": "3", "alerts": []}, "version"), ({"version": "4"}, "alerts")):
        with pytest.raises(InvalidArgument) as err:
            map_payload(payload, Mapping())
        assert err.value.violations[0].field == field
    assert len(map_payload({"version": "4", "alerts": [raw(), raw(fingerprint="other")]}, Mapping())) == 2


def test_snake_case():
    assert snake_case("ModelDrift") == "model_drift"
    assert snake_case("HighPnLRisk") == "high_pn_l_risk" and snake_case("HTTPDown") == "http_down"
    assert snake_case("drift") == "drift"
