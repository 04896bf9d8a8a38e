import datetime

from closedloop.v1 import alert_pb2 as _alert_pb2
from closedloop.v1 import common_pb2 as _common_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClauseValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAUSE_VALUE_UNSPECIFIED: _ClassVar[ClauseValue]
    CLAUSE_VALUE_TRUE: _ClassVar[ClauseValue]
    CLAUSE_VALUE_FALSE: _ClassVar[ClauseValue]
    CLAUSE_VALUE_MISSING: _ClassVar[ClauseValue]
CLAUSE_VALUE_UNSPECIFIED: ClauseValue
CLAUSE_VALUE_TRUE: ClauseValue
CLAUSE_VALUE_FALSE: ClauseValue
CLAUSE_VALUE_MISSING: ClauseValue

class Diagnostic(_message.Message):
    __slots__ = ("level", "message", "filename", "line", "column", "end_line", "end_column", "rendered")
    class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LEVEL_UNSPECIFIED: _ClassVar[Diagnostic.Level]
        LEVEL_ERROR: _ClassVar[Diagnostic.Level]
        LEVEL_WARNING: _ClassVar[Diagnostic.Level]
    LEVEL_UNSPECIFIED: Diagnostic.Level
    LEVEL_ERROR: Diagnostic.Level
    LEVEL_WARNING: Diagnostic.Level
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    END_LINE_FIELD_NUMBER: _ClassVar[int]
    END_COLUMN_FIELD_NUMBER: _ClassVar[int]
    RENDERED_FIELD_NUMBER: _ClassVar[int]
    level: Diagnostic.Level
    message: str
    filename: str
    line: int
    column: int
    end_line: int
    end_column: int
    rendered: str
    def __init__(self, level: _Optional[_Union[Diagnostic.Level, str]] = ..., message: _Optional[str] = ..., filename: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., end_line: _Optional[int] = ..., end_column: _Optional[int] = ..., rendered: _Optional[str] = ...) -> None: ...

class RuleAction(_message.Message):
    __slots__ = ("kind", "mode", "priority", "cooldown", "cooldown_per_model", "target")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_PER_MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    kind: _alert_pb2.ActionKind
    mode: _common_pb2.RetrainMode
    priority: _common_pb2.Priority
    cooldown: _duration_pb2.Duration
    cooldown_per_model: bool
    target: str
    def __init__(self, kind: _Optional[_Union[_alert_pb2.ActionKind, str]] = ..., mode: _Optional[_Union[_common_pb2.RetrainMode, str]] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., cooldown: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cooldown_per_model: _Optional[bool] = ..., target: _Optional[str] = ...) -> None: ...

class Rule(_message.Message):
    __slots__ = ("name", "title", "condition", "actions", "alert_types", "line")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    ALERT_TYPES_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    condition: str
    actions: _containers.RepeatedCompositeFieldContainer[RuleAction]
    alert_types: _containers.RepeatedScalarFieldContainer[str]
    line: int
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., condition: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[RuleAction, _Mapping]]] = ..., alert_types: _Optional[_Iterable[str]] = ..., line: _Optional[int] = ...) -> None: ...

class RuleSet(_message.Message):
    __slots__ = ("version", "rules", "source", "filename", "sha256", "create_time", "diagnostics")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    version: int
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    source: str
    filename: str
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    def __init__(self, version: _Optional[int] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., source: _Optional[str] = ..., filename: _Optional[str] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ...) -> None: ...

class ValidateRulesRequest(_message.Message):
    __slots__ = ("source", "filename")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    source: str
    filename: str
    def __init__(self, source: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class ValidateRulesResponse(_message.Message):
    __slots__ = ("diagnostics", "rules", "valid")
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    valid: bool
    def __init__(self, diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., valid: _Optional[bool] = ...) -> None: ...

class ApplyRulesRequest(_message.Message):
    __slots__ = ("source", "filename", "dry_run")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    source: str
    filename: str
    dry_run: bool
    def __init__(self, source: _Optional[str] = ..., filename: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class GetRuleSetRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class EvaluateRulesRequest(_message.Message):
    __slots__ = ("alert", "source", "filename")
    ALERT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    alert: _alert_pb2.Alert
    source: str
    filename: str
    def __init__(self, alert: _Optional[_Union[_alert_pb2.Alert, _Mapping]] = ..., source: _Optional[str] = ..., filename: _Optional[str] = ...) -> None: ...

class Clause(_message.Message):
    __slots__ = ("text", "value")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    text: str
    value: ClauseValue
    def __init__(self, text: _Optional[str] = ..., value: _Optional[_Union[ClauseValue, str]] = ...) -> None: ...

class RuleEvaluation(_message.Message):
    __slots__ = ("rule", "matched", "clauses", "actions")
    RULE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    CLAUSES_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    rule: str
    matched: bool
    clauses: _containers.RepeatedCompositeFieldContainer[Clause]
    actions: _containers.RepeatedCompositeFieldContainer[RuleAction]
    def __init__(self, rule: _Optional[str] = ..., matched: _Optional[bool] = ..., clauses: _Optional[_Iterable[_Union[Clause, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[RuleAction, _Mapping]]] = ...) -> None: ...

class EvaluateRulesResponse(_message.Message):
    __slots__ = ("evaluations", "rule_set_version", "merged_actions")
    EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    MERGED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    evaluations: _containers.RepeatedCompositeFieldContainer[RuleEvaluation]
    rule_set_version: int
    merged_actions: _containers.RepeatedCompositeFieldContainer[RuleAction]
    def __init__(self, evaluations: _Optional[_Iterable[_Union[RuleEvaluation, _Mapping]]] = ..., rule_set_version: _Optional[int] = ..., merged_actions: _Optional[_Iterable[_Union[RuleAction, _Mapping]]] = ...) -> None: ...

class BacktestRulesRequest(_message.Message):
    __slots__ = ("source", "filename", "start_time", "end_time")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    source: str
    filename: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, source: _Optional[str] = ..., filename: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RuleTriggerCount(_message.Message):
    __slots__ = ("rule", "matches", "retrains")
    RULE_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    RETRAINS_FIELD_NUMBER: _ClassVar[int]
    rule: str
    matches: int
    retrains: int
    def __init__(self, rule: _Optional[str] = ..., matches: _Optional[int] = ..., retrains: _Optional[int] = ...) -> None: ...

class ModelJobCount(_message.Message):
    __slots__ = ("model_id", "jobs")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    jobs: int
    def __init__(self, model_id: _Optional[str] = ..., jobs: _Optional[int] = ...) -> None: ...

class BacktestDifference(_message.Message):
    __slots__ = ("alert_id", "model_id", "active_outcome", "candidate_outcome")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    model_id: str
    active_outcome: str
    candidate_outcome: str
    def __init__(self, alert_id: _Optional[str] = ..., model_id: _Optional[str] = ..., active_outcome: _Optional[str] = ..., candidate_outcome: _Optional[str] = ...) -> None: ...

class BacktestSide(_message.Message):
    __slots__ = ("rule_set_version", "rules", "models", "jobs")
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    rule_set_version: int
    rules: _containers.RepeatedCompositeFieldContainer[RuleTriggerCount]
    models: _containers.RepeatedCompositeFieldContainer[ModelJobCount]
    jobs: int
    def __init__(self, rule_set_version: _Optional[int] = ..., rules: _Optional[_Iterable[_Union[RuleTriggerCount, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelJobCount, _Mapping]]] = ..., jobs: _Optional[int] = ...) -> None: ...

class BacktestReport(_message.Message):
    __slots__ = ("alerts", "active", "candidate", "differences", "differences_total", "diagnostics")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    alerts: int
    active: BacktestSide
    candidate: BacktestSide
    differences: _containers.RepeatedCompositeFieldContainer[BacktestDifference]
    differences_total: int
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    def __init__(self, alerts: _Optional[int] = ..., active: _Optional[_Union[BacktestSide, _Mapping]] = ..., candidate: _Optional[_Union[BacktestSide, _Mapping]] = ..., differences: _Optional[_Iterable[_Union[BacktestDifference, _Mapping]]] = ..., differences_total: _Optional[int] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ...) -> None: ...
