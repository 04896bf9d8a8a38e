"""RetrainService, model registry part: RegisterModel, GetModel, ListModels (RetrainServicer delegates them here)."""

from __future__ import annotations

import asyncpg

from closedloop.dsl.checker import MAX_COOLDOWN_S
from closedloop.v1 import retrain_pb2

from ..config import Settings
from ..errors import InvalidArgument, NotFound
from ..executor.training_spec import DEFAULT_HOLDOUT
from ..executor.source_config import DataSources
from ..loop.model_cache import ModelFactsCache
from ..monitor.spec import MonitoringSpec
from ..store import models as model_store
from ..store import monitoring as monitoring_store
from . import convert, convert_monitor, paging
from .auth import model_scopes, require_model
from .validation import Violations, check_model_id, check_page

async def check_training(v: Violations, spec: retrain_pb2.TrainingSpec, sources: DataSources,
                         field: str = "model.training") -> None:
    """The trainer's own spec check (estimator resolvable inside sklearn, metric fits the task, source
    complete and granted by the operator's data-source configuration), so registration refuses
    exactly what a retrain would fail on. Awaited: its estimator part runs in a helper process."""
    from ..executor.training_spec import check_spec

    for name, description in await check_spec(convert.training_json(spec), sources):
        v.add(f"{field}.{name}", description)


class ModelHandlers:
    def __init__(self, pool: asyncpg.Pool, facts: ModelFactsCache, settings: Settings) -> None:
        self.pool = pool
        self.facts = facts  # dropped entries on registration, so rules see the change at once
        self.sources = DataSources.from_settings(settings)

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
            await check_training(v, m.training, self.sources)
        if m.max_retrains_per_day < 0:
            v.add("model.max_retrains_per_day", "must be >= 0")
        if m.HasField("cooldown_override") and not 0 <= m.cooldown_override.ToNanoseconds() <= MAX_COOLDOWN_S * 10**9:
            v.add("model.cooldown_override", f"must be between 0 and {MAX_COOLDOWN_S // 86400} days")
        monitoring = None
        if m.HasField("monitoring"):
            try:
                monitoring = convert_monitor.spec_from_message(m.monitoring)
            except InvalidArgument as exc:
                v.items.extend(exc.violations)
        v.raise_if_any()
        require_model(m.model_id, "model.model_id")
        spec = retrain_pb2.TrainingSpec()
        spec.CopyFrom(m.training)
        if spec.holdout_fraction == 0:
            spec.holdout_fraction = DEFAULT_HOLDOUT
        if not spec.target and spec.WhichOneof("source") == "synthetic":
            from ..executor.training_spec import synthetic_target

            # Stored with the model, so GetModel shows the column it learns.
            spec.target = synthetic_target(spec.metric)
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                row = await model_store.upsert_model(
                    conn, model_id=m.model_id, training=convert.training_json(spec), metric=spec.metric,
                    promotion_margin=spec.promotion_margin, enabled=m.enabled,
                    cooldown_override_s=(m.cooldown_override.ToNanoseconds() / 1e9
                                         if m.HasField("cooldown_override") else None),
                    max_retrains_per_day=m.max_retrains_per_day or None,
                )
                await monitoring_store.put_spec(conn, m.model_id, monitoring and monitoring.to_dict())
        self.facts.invalidate(m.model_id)
        return _with_monitoring(convert.model_message(row), monitoring and monitoring.to_dict())

    async def GetModel(self, request, context):
        v = Violations()
        check_model_id(v, request.model_id)
        v.raise_if_any()
        require_model(request.model_id)
        async with self.pool.acquire() as conn:
            row = await model_store.get_model(conn, request.model_id)
            specs = await monitoring_store.specs_for(conn, [request.model_id])
        if row is None:
            raise NotFound(f"model {request.model_id!r} is not registered")
        return _with_monitoring(convert.model_message(row), specs.get(request.model_id))

    async def ListModels(self, request, context):
        v = Violations()
        limit = check_page(v, request.page_size, request.page_token)
        v.raise_if_any()
        cursor = paging.decode(request.page_token, {}, {"m": paging.model_id})
        async with self.pool.acquire() as conn:
            rows = await model_store.list_models(conn, after=cursor["m"] if cursor else None, limit=limit + 1,
                                                 scopes=model_scopes())
            page = rows[:limit]
            specs = await monitoring_store.specs_for(conn, [r["model_id"] for r in page])
        token = paging.encode({"m": page[-1]["model_id"]}, {}) if len(rows) > limit else ""
        return retrain_pb2.ListModelsResponse(
            models=[_with_monitoring(convert.model_message(r), specs.get(r["model_id"])) for r in page],
            next_page_token=token)


def _with_monitoring(msg: retrain_pb2.Model, spec: dict | None) -> retrain_pb2.Model:
    """The model message with its stored monitoring spec (left unset when it has none: the defaults)."""
    if spec is not None:
        msg.monitoring.CopyFrom(convert_monitor.spec_message(MonitoringSpec.from_dict(spec)))
    return msg
