"""What the audit trail keeps of a request: no secrets, long strings shortened, the whole capped."""

from __future__ import annotations

import json

from closedloop.server.api.audit import MAX_REQUEST_CHARS, MAX_STRING_CHARS, REDACTED, request_record
from closedloop.v1 import retrain_pb2, rules_pb2


def test_secrets_are_redacted_by_field_name_and_in_urls():
    model = retrain_pb2.Model(model_id="fx-1")
    model.training.params.update({"api_key": "k-123", "nested": {"password": "p-456"}, "ok": 1})
    record = request_record(retrain_pb2.RegisterModelRequest(model=model))
    text = json.dumps(record)
    assert "k-123" not in text and "p-456" not in text
    assert record["model"]["training"]["params"]["nested"]["password"] == REDACTED
    assert record["model"]["model_id"] == "fx-1"
    reason = request_record(retrain_pb2.SubmitRetrainRequest(model_id="m", reason="db postgresql://u:pw9@h/db"))
    assert "pw9" not in reason["reason"] and "postgresql://u:" in reason["reason"]


def test_a_long_rule_source_is_kept_as_its_head_and_digest():
    source = "rule r:\n" + "    # padding\n" * 100_000
    record = request_record(rules_pb2.ApplyRulesRequest(source=source, filename="rules.clr"))
    assert record["filename"] == "rules.clr"
    assert record["source"].startswith(source[:MAX_STRING_CHARS])
    assert f"[{len(source)} chars, sha256 " in record["source"]
    assert len(json.dumps(record)) < MAX_REQUEST_CHARS


def test_a_request_of_many_fields_is_capped_as_a_whole():
    model = retrain_pb2.Model(model_id="fx-1")
    model.training.params.update({f"p{i}": "x" * 400 for i in range(100)})
    record = request_record(retrain_pb2.RegisterModelRequest(model=model))
    assert record["truncated"] is True and len(record["head"]) == MAX_REQUEST_CHARS
