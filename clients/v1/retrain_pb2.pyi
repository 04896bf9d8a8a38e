import datetime

from closedloop.v1 import common_pb2 as _common_pb2
from closedloop.v1 import monitor_pb2 as _monitor_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_HELPED: _ClassVar[Verdict]
    VERDICT_NO_EFFECT: _ClassVar[Verdict]
    VERDICT_HARMED: _ClassVar[Verdict]
    VERDICT_PENDING: _ClassVar[Verdict]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
VERDICT_UNSPECIFIED: Verdict
VERDICT_HELPED: Verdict
VERDICT_NO_EFFECT: Verdict
VERDICT_HARMED: Verdict
VERDICT_PENDING: Verdict

class SqlSource(_message.Message):
    __slots__ = ("source", "query")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    source: str
    query: str
    def __init__(self, source: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class FileSource(_message.Message):
    __slots__ = ("path", "format")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: str
    def __init__(self, path: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class EntryPointSource(_message.Message):
    __slots__ = ("name", "kwargs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kwargs: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., kwargs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SyntheticSource(_message.Message):
    __slots__ = ("seed", "drift", "rows")
    SEED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    seed: int
    drift: float
    rows: int
    def __init__(self, seed: _Optional[int] = ..., drift: _Optional[float] = ..., rows: _Optional[int] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("estimator", "params", "sql", "file", "entry_point", "synthetic", "target", "features", "time_column", "metric", "holdout_fraction", "promotion_margin")
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TIME_COLUMN_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_MARGIN_FIELD_NUMBER: _ClassVar[int]
    estimator: str
    params: _struct_pb2.Struct
    sql: SqlSource
    file: FileSource
    entry_point: EntryPointSource
    synthetic: SyntheticSource
    target: str
    features: _containers.RepeatedScalarFieldContainer[str]
    time_column: str
    metric: str
    holdout_fraction: float
    promotion_margin: float
    def __init__(self, estimator: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., sql: _Optional[_Union[SqlSource, _Mapping]] = ..., file: _Optional[_Union[FileSource, _Mapping]] = ..., entry_point: _Optional[_Union[EntryPointSource, _Mapping]] = ..., synthetic: _Optional[_Union[SyntheticSource, _Mapping]] = ..., target: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., time_column: _Optional[str] = ..., metric: _Optional[str] = ..., holdout_fraction: _Optional[float] = ..., promotion_margin: _Optional[float] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("model_id", "training", "enabled", "current_version", "cooldown_override", "max_retrains_per_day", "create_time", "update_time", "current_version_time", "monitoring")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRAINS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_TIME_FIELD_NUMBER: _ClassVar[int]
    MONITORING_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    training: TrainingSpec
    enabled: bool
    current_version: int
    cooldown_override: _duration_pb2.Duration
    max_retrains_per_day: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    current_version_time: _timestamp_pb2.Timestamp
    monitoring: _monitor_pb2.MonitoringSpec
    def __init__(self, model_id: _Optional[str] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., enabled: _Optional[bool] = ..., current_version: _Optional[int] = ..., cooldown_override: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_retrains_per_day: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_version_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., monitoring: _Optional[_Union[_monitor_pb2.MonitoringSpec, _Mapping]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_id", "version", "job_id", "mode", "metric", "metric_value", "champion_metric_value", "promoted", "artifact_sha256", "data_window", "train_rows", "holdout_rows", "create_time", "refit_fallback")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    METRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_METRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_WINDOW_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_ROWS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REFIT_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    job_id: str
    mode: _common_pb2.RetrainMode
    metric: str
    metric_value: float
    champion_metric_value: float
    promoted: bool
    artifact_sha256: str
    data_window: str
    train_rows: int
    holdout_rows: int
    create_time: _timestamp_pb2.Timestamp
    refit_fallback: bool
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., job_id: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.RetrainMode, str]] = ..., metric: _Optional[str] = ..., metric_value: _Optional[float] = ..., champion_metric_value: _Optional[float] = ..., promoted: _Optional[bool] = ..., artifact_sha256: _Optional[str] = ..., data_window: _Optional[str] = ..., train_rows: _Optional[int] = ..., holdout_rows: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refit_fallback: _Optional[bool] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ("model_id", "version", "reason")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    reason: str
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ...) -> None: ...

class JobTrigger(_message.Message):
    __slots__ = ("alert_id", "action_id", "rule", "manual")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    action_id: str
    rule: str
    manual: bool
    def __init__(self, alert_id: _Optional[str] = ..., action_id: _Optional[str] = ..., rule: _Optional[str] = ..., manual: _Optional[bool] = ...) -> None: ...

class RetrainJob(_message.Message):
    __slots__ = ("id", "model_id", "mode", "priority", "state", "attempt", "max_attempts", "progress", "progress_message", "trigger", "reason", "metric", "champion_metric", "challenger_metric", "promoted", "new_version", "error", "create_time", "start_time", "end_time", "refit_fallback", "coalesced_triggers", "trained_version", "serving_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_METRIC_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_METRIC_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    REFIT_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    COALESCED_TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    model_id: str
    mode: _common_pb2.RetrainMode
    priority: _common_pb2.Priority
    state: JobState
    attempt: int
    max_attempts: int
    progress: float
    progress_message: str
    trigger: JobTrigger
    reason: str
    metric: str
    champion_metric: float
    challenger_metric: float
    promoted: bool
    new_version: int
    error: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    refit_fallback: bool
    coalesced_triggers: int
    trained_version: int
    serving_version: int
    def __init__(self, id: _Optional[str] = ..., model_id: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.RetrainMode, str]] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., progress: _Optional[float] = ..., progress_message: _Optional[str] = ..., trigger: _Optional[_Union[JobTrigger, _Mapping]] = ..., reason: _Optional[str] = ..., metric: _Optional[str] = ..., champion_metric: _Optional[float] = ..., challenger_metric: _Optional[float] = ..., promoted: _Optional[bool] = ..., new_version: _Optional[int] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., refit_fallback: _Optional[bool] = ..., coalesced_triggers: _Optional[int] = ..., trained_version: _Optional[int] = ..., serving_version: _Optional[int] = ...) -> None: ...

class SubmitRetrainRequest(_message.Message):
    __slots__ = ("model_id", "mode", "priority", "reason", "request_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    mode: _common_pb2.RetrainMode
    priority: _common_pb2.Priority
    reason: str
    request_id: str
    def __init__(self, model_id: _Optional[str] = ..., mode: _Optional[_Union[_common_pb2.RetrainMode, str]] = ..., priority: _Optional[_Union[_common_pb2.Priority, str]] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("model_id", "state", "page_size", "page_token")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    state: JobState
    page_size: int
    page_token: str
    def __init__(self, model_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[RetrainJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[RetrainJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetFeedbackReportRequest(_message.Message):
    __slots__ = ("model_id", "rule", "start_time", "end_time", "false_negative_window")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FALSE_NEGATIVE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    rule: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    false_negative_window: _duration_pb2.Duration
    def __init__(self, model_id: _Optional[str] = ..., rule: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., false_negative_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FeedbackStats(_message.Message):
    __slots__ = ("triggers", "actions_by_decision", "retrains", "succeeded", "promoted", "finished_rate", "promotion_rate", "mean_improvement", "median_improvement", "mean_time_to_recovery", "false_positive_rate", "false_negative_rate", "evaluations_quiet", "helped", "no_effect", "harmed", "helped_rate")
    class ActionsByDecisionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_BY_DECISION_FIELD_NUMBER: _ClassVar[int]
    RETRAINS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_RATE_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    MEAN_TIME_TO_RECOVERY_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    FALSE_NEGATIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    EVALUATIONS_QUIET_FIELD_NUMBER: _ClassVar[int]
    HELPED_FIELD_NUMBER: _ClassVar[int]
    NO_EFFECT_FIELD_NUMBER: _ClassVar[int]
    HARMED_FIELD_NUMBER: _ClassVar[int]
    HELPED_RATE_FIELD_NUMBER: _ClassVar[int]
    triggers: int
    actions_by_decision: _containers.ScalarMap[str, int]
    retrains: int
    succeeded: int
    promoted: int
    finished_rate: float
    promotion_rate: float
    mean_improvement: float
    median_improvement: float
    mean_time_to_recovery: _duration_pb2.Duration
    false_positive_rate: float
    false_negative_rate: float
    evaluations_quiet: int
    helped: int
    no_effect: int
    harmed: int
    helped_rate: float
    def __init__(self, triggers: _Optional[int] = ..., actions_by_decision: _Optional[_Mapping[str, int]] = ..., retrains: _Optional[int] = ..., succeeded: _Optional[int] = ..., promoted: _Optional[int] = ..., finished_rate: _Optional[float] = ..., promotion_rate: _Optional[float] = ..., mean_improvement: _Optional[float] = ..., median_improvement: _Optional[float] = ..., mean_time_to_recovery: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., false_positive_rate: _Optional[float] = ..., false_negative_rate: _Optional[float] = ..., evaluations_quiet: _Optional[int] = ..., helped: _Optional[int] = ..., no_effect: _Optional[int] = ..., harmed: _Optional[int] = ..., helped_rate: _Optional[float] = ...) -> None: ...

class RuleFeedback(_message.Message):
    __slots__ = ("rule", "stats")
    RULE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    rule: str
    stats: FeedbackStats
    def __init__(self, rule: _Optional[str] = ..., stats: _Optional[_Union[FeedbackStats, _Mapping]] = ...) -> None: ...

class ModelFeedback(_message.Message):
    __slots__ = ("model_id", "stats")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    stats: FeedbackStats
    def __init__(self, model_id: _Optional[str] = ..., stats: _Optional[_Union[FeedbackStats, _Mapping]] = ...) -> None: ...

class ActionVerdict(_message.Message):
    __slots__ = ("action_id", "alert_id", "rule", "model_id", "job_id", "verdict", "improvement")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    alert_id: str
    rule: str
    model_id: str
    job_id: str
    verdict: Verdict
    improvement: float
    def __init__(self, action_id: _Optional[str] = ..., alert_id: _Optional[str] = ..., rule: _Optional[str] = ..., model_id: _Optional[str] = ..., job_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., improvement: _Optional[float] = ...) -> None: ...

class ThresholdSuggestion(_message.Message):
    __slots__ = ("rule", "field", "operator", "current_value", "suggested_value", "false_positives_removed", "helpful_retrains_kept", "helpful_retrains_lost", "explanation")
    RULE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VALUE_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    HELPFUL_RETRAINS_KEPT_FIELD_NUMBER: _ClassVar[int]
    HELPFUL_RETRAINS_LOST_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    rule: str
    field: str
    operator: str
    current_value: float
    suggested_value: float
    false_positives_removed: int
    helpful_retrains_kept: int
    helpful_retrains_lost: int
    explanation: str
    def __init__(self, rule: _Optional[str] = ..., field: _Optional[str] = ..., operator: _Optional[str] = ..., current_value: _Optional[float] = ..., suggested_value: _Optional[float] = ..., false_positives_removed: _Optional[int] = ..., helpful_retrains_kept: _Optional[int] = ..., helpful_retrains_lost: _Optional[int] = ..., explanation: _Optional[str] = ...) -> None: ...

class FeedbackDefinition(_message.Message):
    __slots__ = ("term", "meaning")
    TERM_FIELD_NUMBER: _ClassVar[int]
    MEANING_FIELD_NUMBER: _ClassVar[int]
    term: str
    meaning: str
    def __init__(self, term: _Optional[str] = ..., meaning: _Optional[str] = ...) -> None: ...

class FeedbackReport(_message.Message):
    __slots__ = ("start_time", "end_time", "rules", "models", "manual", "verdicts", "suggestions", "definitions")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    rules: _containers.RepeatedCompositeFieldContainer[RuleFeedback]
    models: _containers.RepeatedCompositeFieldContainer[ModelFeedback]
    manual: FeedbackStats
    verdicts: _containers.RepeatedCompositeFieldContainer[ActionVerdict]
    suggestions: _containers.RepeatedCompositeFieldContainer[ThresholdSuggestion]
    definitions: _containers.RepeatedCompositeFieldContainer[FeedbackDefinition]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rules: _Optional[_Iterable[_Union[RuleFeedback, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelFeedback, _Mapping]]] = ..., manual: _Optional[_Union[FeedbackStats, _Mapping]] = ..., verdicts: _Optional[_Iterable[_Union[ActionVerdict, _Mapping]]] = ..., suggestions: _Optional[_Iterable[_Union[ThresholdSuggestion, _Mapping]]] = ..., definitions: _Optional[_Iterable[_Union[FeedbackDefinition, _Mapping]]] = ...) -> None: ...

class ListAuditRecordsRequest(_message.Message):
    __slots__ = ("start_time", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("id", "time", "token_name", "method", "request", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    time: _timestamp_pb2.Timestamp
    token_name: str
    method: str
    request: _struct_pb2.Struct
    code: str
    message: str
    def __init__(self, id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., token_name: _Optional[str] = ..., method: _Optional[str] = ..., request: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListAuditRecordsResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
