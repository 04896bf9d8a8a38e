"""The rule language's view of an alert (dsl/schema.py) and the wire format (the Alert message
of protos/closedloop/v1/alert.proto) must not drift apart: every rule-visible alert field is
derived from an Alert field of the matching type, and the enums agree."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from closedloop.dsl.schema import ACTION_ARGS, ALERT_FIELDS, LEVELS, RETRAIN_MODES, Type
from closedloop.v1 import alert_pb2, common_pb2

ALERT = alert_pb2.Alert.DESCRIPTOR


def _map_value_type(field: FieldDescriptor) -> int | None:
    entry = field.message_type
    if entry is None or not entry.GetOptions().map_entry:
        return None
    return entry.fields_by_name["value"].type


def _matches(dsl_type: Type, field: FieldDescriptor) -> bool:
    if dsl_type == Type.STRING:
        return field.type == FieldDescriptor.TYPE_STRING
    if dsl_type == Type.SEVERITY:
        return field.enum_type is not None and field.enum_type.full_name == "closedloop.v1.Severity"
    if dsl_type == Type.METRICS:
        return _map_value_type(field) == FieldDescriptor.TYPE_DOUBLE
    if dsl_type == Type.LABELS:
        return _map_value_type(field) == FieldDescriptor.TYPE_STRING
    if dsl_type == Type.DURATION:  # a duration since a point in time: derived from a Timestamp
        return field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp"
    return False


def test_every_alert_field_of_the_language_comes_from_the_message():
    for name, spec in ALERT_FIELDS.items():
        assert spec.proto_field in ALERT.fields_by_name, f"{name}: Alert has no field {spec.proto_field}"
        field = ALERT.fields_by_name[spec.proto_field]
        assert _matches(spec.type, field), f"{name}: {spec.type} does not match Alert.{field.name}"


def test_the_message_fields_a_rule_needs_are_all_visible():
    visible = {spec.proto_field for spec in ALERT_FIELDS.values()}
    assert {"model_id", "type", "severity", "metrics", "labels", "source", "observe_time"} <= visible


def test_levels_match_severity_and_priority_enums():
    for enum in (common_pb2.Severity, common_pb2.Priority):
        prefix = enum.DESCRIPTOR.name.upper()
        members = {v.name.removeprefix(prefix + "_").lower(): v.number for v in enum.DESCRIPTOR.values}
        members.pop("unspecified")
        assert members == LEVELS


def test_actions_and_modes_match_the_enums():
    kinds = {v.name.removeprefix("ACTION_KIND_").lower() for v in alert_pb2.ActionKind.DESCRIPTOR.values} - {"unspecified"}
    assert kinds == set(ACTION_ARGS)
    modes = {v.name.removeprefix("RETRAIN_MODE_").lower() for v in common_pb2.RetrainMode.DESCRIPTOR.values} - {"unspecified"}
    assert modes == set(RETRAIN_MODES)
