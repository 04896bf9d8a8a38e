"""Outcome windows, the stored spec form, the MonitoringSpec message conversion and the CLI sparkline."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from closedloop.server.api.convert_monitor import spec_from_message, spec_message
from closedloop.server.cli.monitor_commands import sparkline
from closedloop.server.errors import InvalidArgument
from closedloop.server.monitor.outcomes import OutcomeWindow
from closedloop.server.monitor.spec import MonitoringSpec
from closedloop.v1 import common_pb2, monitor_pb2


def test_outcome_partials_merge_and_round_trip_to_what_one_window_sees():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 2, 900).astype(float), rng.integers(0, 2, 900).astype(float)
    whole, a, b = OutcomeWindow("m", 2), OutcomeWindow("m", 2), OutcomeWindow("m", 2)
    whole.update(y, p)
    a.update(y[:400], p[:400])
    b.update(y[400:], p[400:])
    merged = OutcomeWindow.from_bytes(a.to_bytes())
    merged.merge(OutcomeWindow.from_bytes(b.to_bytes()))
    spec = MonitoringSpec()
    assert merged.rows == 900
    assert merged.judge("accuracy", 0.9, spec) == whole.judge("accuracy", 0.9, spec)
    with pytest.raises(ValueError):
        merged.merge(OutcomeWindow("m", 3))


@pytest.mark.parametrize("outcomes, predictions, field", [
    ([1.0, float("nan")], [1.0, 0.0], "outcomes"),
    ([1.0, 0.0], [1.0, float("inf")], "predictions"),
    ([1.0, 0.0], [1.0], "predictions"),
])
def test_bad_outcome_batches_leave_the_window_untouched(outcomes, predictions, field):
    window = OutcomeWindow("m", 1)
    window.update([1.0], [1.0])
    with pytest.raises(InvalidArgument) as info:
        window.update(outcomes, predictions)
    assert [v.field for v in info.value.violations] == [field]
    assert window.rows == 1


def test_spec_round_trips_through_its_stored_form_and_the_message():
    spec = MonitoringSpec(window_rows=None, window_seconds=600.0, features=("a", "b"), numeric_method="psi",
                          performance_severity=(("MEDIUM", 0.1), ("CRITICAL", 0.5))).validate()
    assert MonitoringSpec.from_dict(spec.to_dict()) == spec
    assert MonitoringSpec.from_dict(None) == MonitoringSpec()
    assert spec_from_message(spec_message(spec)) == spec
    assert spec_from_message(monitor_pb2.MonitoringSpec()) == MonitoringSpec()


def test_spec_message_errors_name_the_model_field():
    msg = monitor_pb2.MonitoringSpec(window_rows=0, window_duration=Duration(seconds=0), drift_share=0.0,
                                     performance_severity=[monitor_pb2.SeverityThreshold(drop=0.1)])
    with pytest.raises(InvalidArgument) as info:
        spec_from_message(msg)
    assert [v.field for v in info.value.violations] == ["model.monitoring.performance_severity[0].severity"]
    msg.performance_severity[0].severity = common_pb2.SEVERITY_HIGH
    with pytest.raises(InvalidArgument) as info:
        spec_from_message(msg)
    assert {v.field for v in info.value.violations} == {"model.monitoring.window_rows", "model.monitoring.drift_share"}


def test_sparkline_scales_to_the_top_value():
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"
    assert sparkline([0.1, 0.1], top=1.0) == "▂▂"
    assert sparkline([]) == ""
