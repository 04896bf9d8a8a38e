import datetime

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

class WindowKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_KIND_UNSPECIFIED: _ClassVar[WindowKind]
    WINDOW_KIND_OBSERVATIONS: _ClassVar[WindowKind]
    WINDOW_KIND_OUTCOMES: _ClassVar[WindowKind]

class WindowState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_STATE_UNSPECIFIED: _ClassVar[WindowState]
    WINDOW_STATE_OPEN: _ClassVar[WindowState]
    WINDOW_STATE_CLOSED: _ClassVar[WindowState]
WINDOW_KIND_UNSPECIFIED: WindowKind
WINDOW_KIND_OBSERVATIONS: WindowKind
WINDOW_KIND_OUTCOMES: WindowKind
WINDOW_STATE_UNSPECIFIED: WindowState
WINDOW_STATE_OPEN: WindowState
WINDOW_STATE_CLOSED: WindowState

class MonitoringSpec(_message.Message):
    __slots__ = ("window_rows", "window_duration", "min_rows", "features", "numeric_method", "categorical_method", "alpha", "large_sample_rows", "wasserstein_threshold", "psi_threshold", "psi_bins", "js_threshold", "drift_share", "sketch_k", "performance_severity", "outcome_window_rows")
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DURATION_FIELD_NUMBER: _ClassVar[int]
    MIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_METHOD_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_METHOD_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    LARGE_SAMPLE_ROWS_FIELD_NUMBER: _ClassVar[int]
    WASSERSTEIN_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PSI_BINS_FIELD_NUMBER: _ClassVar[int]
    JS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SHARE_FIELD_NUMBER: _ClassVar[int]
    SKETCH_K_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    window_rows: int
    window_duration: _duration_pb2.Duration
    min_rows: int
    features: _containers.RepeatedScalarFieldContainer[str]
    numeric_method: str
    categorical_method: str
    alpha: float
    large_sample_rows: int
    wasserstein_threshold: float
    psi_threshold: float
    psi_bins: int
    js_threshold: float
    drift_share: float
    sketch_k: int
    performance_severity: _containers.RepeatedCompositeFieldContainer[SeverityThreshold]
    outcome_window_rows: int
    def __init__(self, window_rows: _Optional[int] = ..., window_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_rows: _Optional[int] = ..., features: _Optional[_Iterable[str]] = ..., numeric_method: _Optional[str] = ..., categorical_method: _Optional[str] = ..., alpha: _Optional[float] = ..., large_sample_rows: _Optional[int] = ..., wasserstein_threshold: _Optional[float] = ..., psi_threshold: _Optional[float] = ..., psi_bins: _Optional[int] = ..., js_threshold: _Optional[float] = ..., drift_share: _Optional[float] = ..., sketch_k: _Optional[int] = ..., performance_severity: _Optional[_Iterable[_Union[SeverityThreshold, _Mapping]]] = ..., outcome_window_rows: _Optional[int] = ...) -> None: ...

class SeverityThreshold(_message.Message):
    __slots__ = ("severity", "drop")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    DROP_FIELD_NUMBER: _ClassVar[int]
    severity: _common_pb2.Severity
    drop: float
    def __init__(self, severity: _Optional[_Union[_common_pb2.Severity, str]] = ..., drop: _Optional[float] = ...) -> None: ...

class FeatureColumn(_message.Message):
    __slots__ = ("numbers", "categories")
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    numbers: DoubleColumn
    categories: StringColumn
    def __init__(self, numbers: _Optional[_Union[DoubleColumn, _Mapping]] = ..., categories: _Optional[_Union[StringColumn, _Mapping]] = ...) -> None: ...

class DoubleColumn(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class StringColumn(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class ObservationBatch(_message.Message):
    __slots__ = ("model_id", "version", "feature_names", "columns", "predictions", "prediction_ids", "observe_time", "row_observe_time_micros")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROW_OBSERVE_TIME_MICROS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    columns: _containers.RepeatedCompositeFieldContainer[FeatureColumn]
    predictions: _containers.RepeatedScalarFieldContainer[float]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    observe_time: _timestamp_pb2.Timestamp
    row_observe_time_micros: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., columns: _Optional[_Iterable[_Union[FeatureColumn, _Mapping]]] = ..., predictions: _Optional[_Iterable[float]] = ..., prediction_ids: _Optional[_Iterable[str]] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., row_observe_time_micros: _Optional[_Iterable[int]] = ...) -> None: ...

class OutcomeBatch(_message.Message):
    __slots__ = ("model_id", "version", "outcomes", "predictions", "prediction_ids", "observe_time")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    outcomes: _containers.RepeatedScalarFieldContainer[float]
    predictions: _containers.RepeatedScalarFieldContainer[float]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    observe_time: _timestamp_pb2.Timestamp
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., outcomes: _Optional[_Iterable[float]] = ..., predictions: _Optional[_Iterable[float]] = ..., prediction_ids: _Optional[_Iterable[str]] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogSummary(_message.Message):
    __slots__ = ("batches", "rows", "values")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    rows: int
    values: int
    def __init__(self, batches: _Optional[int] = ..., rows: _Optional[int] = ..., values: _Optional[int] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "method", "statistic", "p_value", "threshold", "drifted", "effect", "reference_rows", "window_rows")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    method: str
    statistic: float
    p_value: float
    threshold: float
    drifted: bool
    effect: float
    reference_rows: int
    window_rows: int
    def __init__(self, feature: _Optional[str] = ..., method: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., threshold: _Optional[float] = ..., drifted: _Optional[bool] = ..., effect: _Optional[float] = ..., reference_rows: _Optional[int] = ..., window_rows: _Optional[int] = ...) -> None: ...

class PerformanceResult(_message.Message):
    __slots__ = ("metric", "value", "holdout_value", "drop", "severity")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DROP_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    metric: str
    value: float
    holdout_value: float
    drop: float
    severity: _common_pb2.Severity
    def __init__(self, metric: _Optional[str] = ..., value: _Optional[float] = ..., holdout_value: _Optional[float] = ..., drop: _Optional[float] = ..., severity: _Optional[_Union[_common_pb2.Severity, str]] = ...) -> None: ...

class DriftWindow(_message.Message):
    __slots__ = ("model_id", "version", "kind", "sequence", "state", "rows", "start_time", "close_time", "first_observe_time", "last_observe_time", "judged", "note", "drift_score", "drifted_share", "features", "prediction", "performance", "alert_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRST_OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_SCORE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    kind: WindowKind
    sequence: int
    state: WindowState
    rows: int
    start_time: _timestamp_pb2.Timestamp
    close_time: _timestamp_pb2.Timestamp
    first_observe_time: _timestamp_pb2.Timestamp
    last_observe_time: _timestamp_pb2.Timestamp
    judged: bool
    note: str
    drift_score: float
    drifted_share: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    prediction: FeatureDrift
    performance: PerformanceResult
    alert_id: str
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[_Union[WindowKind, str]] = ..., sequence: _Optional[int] = ..., state: _Optional[_Union[WindowState, str]] = ..., rows: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., close_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., judged: _Optional[bool] = ..., note: _Optional[str] = ..., drift_score: _Optional[float] = ..., drifted_share: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., prediction: _Optional[_Union[FeatureDrift, _Mapping]] = ..., performance: _Optional[_Union[PerformanceResult, _Mapping]] = ..., alert_id: _Optional[str] = ...) -> None: ...

class GetDriftReportRequest(_message.Message):
    __slots__ = ("model_id", "version", "window_count")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_COUNT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    window_count: int
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., window_count: _Optional[int] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("model_id", "current_version", "windows", "open_windows")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    OPEN_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    current_version: int
    windows: _containers.RepeatedCompositeFieldContainer[DriftWindow]
    open_windows: _containers.RepeatedCompositeFieldContainer[DriftWindow]
    def __init__(self, model_id: _Optional[str] = ..., current_version: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[DriftWindow, _Mapping]]] = ..., open_windows: _Optional[_Iterable[_Union[DriftWindow, _Mapping]]] = ...) -> None: ...

class ListDriftWindowsRequest(_message.Message):
    __slots__ = ("model_id", "version", "kind", "page_size", "page_token")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: int
    kind: WindowKind
    page_size: int
    page_token: str
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[_Union[WindowKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDriftWindowsResponse(_message.Message):
    __slots__ = ("windows", "next_page_token")
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[DriftWindow]
    next_page_token: str
    def __init__(self, windows: _Optional[_Iterable[_Union[DriftWindow, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
