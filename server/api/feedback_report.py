"""RetrainService, feedback part: GetFeedbackReport (mixed into RetrainServicer). No SQL here."""

from __future__ import annotations

import datetime as dt

from ..db.pool import translate_errors
from ..feedback.report import build_report
from .convert import from_timestamp
from .validation import Violations, check_model_id


class FeedbackMixin:
    pool = None
    rules = None

    async def GetFeedbackReport(self, request, context):
        v = Violations()
        if request.model_id:
            check_model_id(v, request.model_id)
        start = from_timestamp(request.start_time) if request.HasField("start_time") else None
        end = from_timestamp(request.end_time) if request.HasField("end_time") else None
        if start and end and end <= start:
            v.add("end_time", "must be after start_time")
        window = None
        if request.HasField("false_negative_window"):
            nanos = request.false_negative_window.ToNanoseconds()
            if nanos <= 0:
                v.add("false_negative_window", "must be positive")
            window = dt.timedelta(microseconds=nanos / 1000)
        v.raise_if_any()
        active = self.rules.active if self.rules is not None else None
        with translate_errors():
            return await build_report(self.pool, model_id=request.model_id or None, rule=request.rule or None,
                                      start=start, end=end, fn_window=window,
                                      active_ruleset=active.ruleset if active else None)
