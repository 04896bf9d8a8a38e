"""Every RPC of the v1 services has a handler: nothing falls through to the stubs' UNIMPLEMENTED."""

from __future__ import annotations

import pytest

from closedloop.server.api.alerts import AlertServicer
from closedloop.server.api.monitor import MonitorServicer
from closedloop.server.api.notifications import NotificationServicer
from closedloop.server.api.retrain import RetrainServicer
from closedloop.server.api.rules import RuleServicer
from closedloop.v1 import (alert_pb2, alert_pb2_grpc, monitor_pb2, monitor_pb2_grpc, notify_pb2, notify_pb2_grpc,
                           retrain_pb2, retrain_pb2_grpc, rules_pb2, rules_pb2_grpc)


@pytest.mark.parametrize("module, service, servicer, base", [
    (alert_pb2, "AlertService", AlertServicer, alert_pb2_grpc.AlertServiceServicer),
    (rules_pb2, "RuleService", RuleServicer, rules_pb2_grpc.RuleServiceServicer),
    (retrain_pb2, "RetrainService", RetrainServicer, retrain_pb2_grpc.RetrainServiceServicer),
    (notify_pb2, "NotificationService", NotificationServicer, notify_pb2_grpc.NotificationServiceServicer),
    (monitor_pb2, "MonitorService", MonitorServicer, monitor_pb2_grpc.MonitorServiceServicer),
])
def test_every_rpc_is_implemented(module, service, servicer, base):
    methods = [m.name for m in module.DESCRIPTOR.services_by_name[service].methods]
    missing = [name for name in methods if getattr(servicer, name) is getattr(base, name)]
    assert missing == []
