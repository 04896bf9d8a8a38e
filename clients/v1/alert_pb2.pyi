import datetime

from closedloop.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_OPEN: _ClassVar[AlertState]
    ALERT_STATE_ACTIONED: _ClassVar[AlertState]
    ALERT_STATE_SUPPRESSED: _ClassVar[AlertState]
    ALERT_STATE_ACKNOWLEDGED: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]

class ActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_KIND_UNSPECIFIED: _ClassVar[ActionKind]
    ACTION_KIND_RETRAIN: _ClassVar[ActionKind]
    ACTION_KIND_RECORD: _ClassVar[ActionKind]
    ACTION_KIND_NOTIFY: _ClassVar[ActionKind]
    ACTION_KIND_ROLLBACK: _ClassVar[ActionKind]

class ActionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_STATE_UNSPECIFIED: _ClassVar[ActionState]
    ACTION_STATE_QUEUED: _ClassVar[ActionState]
    ACTION_STATE_COALESCED: _ClassVar[ActionState]
    ACTION_STATE_SKIPPED_COOLDOWN: _ClassVar[ActionState]
    ACTION_STATE_SKIPPED_BUDGET: _ClassVar[ActionState]
    ACTION_STATE_RECORDED: _ClassVar[ActionState]
    ACTION_STATE_ROLLED_BACK: _ClassVar[ActionState]
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_OPEN: AlertState
ALERT_STATE_ACTIONED: AlertState
ALERT_STATE_SUPPRESSED: AlertState
ALERT_STATE_ACKNOWLEDGED: AlertState
ALERT_STATE_RESOLVED: AlertState
ACTION_KIND_UNSPECIFIED: ActionKind
ACTION_KIND_RETRAIN: ActionKind
ACTION_KIND_RECORD: ActionKind
ACTION_KIND_NOTIFY: ActionKind
ACTION_KIND_ROLLBACK: ActionKind
ACTION_STATE_UNSPECIFIED: ActionState
ACTION_STATE_QUEUED: ActionState
ACTION_STATE_COALESCED: ActionState
ACTION_STATE_SKIPPED_COOLDOWN: ActionState
ACTION_STATE_SKIPPED_BUDGET: ActionState
ACTION_STATE_RECORDED: ActionState
ACTION_STATE_ROLLED_BACK: ActionState

class Alert(_message.Message):
    __slots__ = ("id", "model_id", "type", "severity", "metrics", "labels", "source", "observe_time", "create_time", "state", "actions", "rule_set_version", "update_time")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_id: str
    type: str
    severity: _common_pb2.Severity
    metrics: _containers.ScalarMap[str, float]
    labels: _containers.ScalarMap[str, str]
    source: str
    observe_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    state: AlertState
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    rule_set_version: int
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., model_id: _Optional[str] = ..., type: _Optional[str] = ..., severity: _Optional[_Union[_common_pb2.Severity, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., labels: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[AlertState, str]] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., rule_set_version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("id", "alert_id", "rule", "kind", "mode", "priority", "state", "job_id", "reason", "model_id", "rule_set_version", "cooldown_until", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_UNTIL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    alert_id: str
    rule: str
    kind: ActionKind
    mode: _common_pb2.RetrainMode
    priority: _common_pb2.Priority
    state: ActionState
    job_id: str
    reason: str
    model_id: str
    rule_set_version: int
    cooldown_until: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., alert_id: _Optional[str] = ..., rule: _Optional[str] = ..., kind: _Optional[_Union[ActionKind, str]] = ..., mode: _Optional[_Union[_common_pb2.RetrainMode, str]] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., state: _Optional[_Union[ActionState, str]] = ..., job_id: _Optional[str] = ..., reason: _Optional[str] = ..., model_id: _Optional[str] = ..., rule_set_version: _Optional[int] = ..., cooldown_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAlertRequest(_message.Message):
    __slots__ = ("alert", "request_id")
    ALERT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    alert: Alert
    request_id: str
    def __init__(self, alert: _Optional[_Union[Alert, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchCreateAlertsRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateAlertRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateAlertRequest, _Mapping]]] = ...) -> None: ...

class BatchCreateAlertsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchCreateAlertsResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchCreateAlertsResult, _Mapping]]] = ...) -> None: ...

class BatchCreateAlertsResult(_message.Message):
    __slots__ = ("alert", "code", "message")
    ALERT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    alert: Alert
    code: int
    message: str
    def __init__(self, alert: _Optional[_Union[Alert, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class GetAlertRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("model_id", "type", "state", "start_time", "end_time", "page_size", "page_token")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    type: str
    state: AlertState
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, model_id: _Optional[str] = ..., type: _Optional[str] = ..., state: _Optional[_Union[AlertState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts", "next_page_token")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    next_page_token: str
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateAlertStateRequest(_message.Message):
    __slots__ = ("id", "state")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: AlertState
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[AlertState, str]] = ...) -> None: ...
