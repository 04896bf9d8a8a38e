"""RetrainService, model registry part: RegisterModel, GetModel, ListModels (mixed into RetrainServicer)."""

from __future__ import annotations

import math

from closedloop.v1 import retrain_pb2

from ..db.pool import translate_errors
from ..errors import NotFound
from ..store import models as model_store
from . import convert, paging
from .validation import Violations, check_model_id, check_page

METRICS = ("accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2")
ENTRY_POINT = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


def check_training(v: Violations, spec: retrain_pb2.TrainingSpec, field: str = "model.training") -> None:
    import re

    if not spec.estimator:
        v.add(f"{field}.estimator", "required, e.g. linear_model.SGDClassifier")
    elif not re.match(r"^[a-z_]+(\.[a-z_]+)*\.[A-Z]\w*$", spec.estimator):
        v.add(f"{field}.estimator", "must name a scikit-learn class as module.Class, e.g. ensemble.RandomForestClassifier")
    source = spec.WhichOneof("source")
    if source is None:
        v.add(f"{field}.source", "required: one of sql, file, entry_point, synthetic")
    elif source == "sql":
        if not spec.sql.dsn.startswith(("postgres://", "postgresql://")):
            v.add(f"{field}.sql.dsn", "must be a postgresql:// URL")
        if not spec.sql.query.strip():
            v.add(f"{field}.sql.query", "required")
    elif source == "file":
        if not spec.file.path:
            v.add(f"{field}.file.path", "required")
        fmt = spec.file.format or spec.file.path.rsplit(".", 1)[-1].lower()
        if fmt not in ("csv", "parquet"):
            v.add(f"{field}.file.format", "must be csv or parquet (or a path ending in .csv/.parquet)")
    elif source == "entry_point":
        if not re.match(ENTRY_POINT, spec.entry_point.entry_point):
            v.add(f"{field}.entry_point.entry_point", "must be module:function")
    elif source == "synthetic":
        if not 0 <= spec.synthetic.drift <= 1:
            v.add(f"{field}.synthetic.drift", "must be between 0 and 1")
        if not 0 <= spec.synthetic.rows <= 1_000_000:
            v.add(f"{field}.synthetic.rows", "must be between 0 (default) and 1,000,000")
    if source != "synthetic" and not spec.target:
        v.add(f"{field}.target", "required")
    if spec.metric not in METRICS:
        v.add(f"{field}.metric", f"must be one of {', '.join(METRICS)}")
    if not (0 <= spec.holdout_fraction <= 0.9) or math.isnan(spec.holdout_fraction):
        v.add(f"{field}.holdout_fraction", "must be in (0, 0.9]; 0 means the default 0.2")
    if not (spec.promotion_margin >= 0 and math.isfinite(spec.promotion_margin)):
        v.add(f"{field}.promotion_margin", "must be a finite number >= 0")


class ModelsMixin:
    pool = None

    async def RegisterModel(self, request, context):
        v = Violations()
        if not request.HasField("model"):
            v.add("model", "required")
            v.raise_if_any()
        m = request.model
        check_model_id(v, m.model_id, "model.model_id")
        if not m.HasField("training"):
            v.add("model.training", "required")
        else:
            check_training(v, m.training)
        if m.max_retrains_per_day < 0:
            v.add("model.max_retrains_per_day", "must be >= 0")
        if m.HasField("cooldown_override") and m.cooldown_override.ToNanoseconds() < 0:
            v.add("model.cooldown_override", "must not be negative")
        v.raise_if_any()
        spec = retrain_pb2.TrainingSpec()
        spec.CopyFrom(m.training)
        if spec.holdout_fraction == 0:
            spec.holdout_fraction = 0.2
        with translate_errors():
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    row = await model_store.upsert_model(
                        conn, model_id=m.model_id, training=convert.training_json(spec), metric=spec.metric,
                        promotion_margin=spec.promotion_margin, enabled=m.enabled,
                        cooldown_override_s=(m.cooldown_override.ToNanoseconds() / 1e9
                                             if m.HasField("cooldown_override") else None),
                        max_retrains_per_day=m.max_retrains_per_day or None,
                    )
        self.facts.invalidate(m.model_id)
        return convert.model_message(row)

    async def GetModel(self, request, context):
        v = Violations()
        check_model_id(v, request.model_id)
        v.raise_if_any()
        with translate_errors():
            async with self.pool.acquire() as conn:
                row = await model_store.get_model(conn, request.model_id)
        if row is None:
            raise NotFound(f"model {request.model_id!r} is not registered")
        return convert.model_message(row)

    async def ListModels(self, request, context):
        v = Violations()
        limit = check_page(v, request.page_size, request.page_token)
        v.raise_if_any()
        cursor = paging.decode(request.page_token, {})
        with translate_errors():
            async with self.pool.acquire() as conn:
                rows = await model_store.list_models(conn, after=(cursor or {}).get("m"), limit=limit + 1)
        page = rows[:limit]
        token = paging.encode({"m": page[-1]["model_id"]}, {}) if len(rows) > limit else ""
        return retrain_pb2.ListModelsResponse(models=[convert.model_message(r) for r in page], next_page_token=token)
