"""RetrainService: one servicer that hands each RPC to the handler object of its concern
(models.py: the registry, jobs.py: jobs and versions, feedback_report.py: the feedback report,
audit.py: the audit trail)."""

from __future__ import annotations

import asyncpg

from closedloop.v1 import retrain_pb2_grpc

from ..config import Settings
from ..loop.model_cache import ModelFactsCache
from ..loop.rule_engine import RuleEngine
from .audit import AuditHandlers
from .feedback_report import FeedbackHandlers
from .jobs import JobHandlers
from .models import ModelHandlers


class RetrainServicer(retrain_pb2_grpc.RetrainServiceServicer):
    def __init__(self, pool: asyncpg.Pool, settings: Settings, facts: ModelFactsCache, rules: RuleEngine) -> None:
        self.models = ModelHandlers(pool, facts, settings)
        self.jobs = JobHandlers(pool, settings)
        self.feedback = FeedbackHandlers(pool, rules)
        self.audit = AuditHandlers(pool)

    async def RegisterModel(self, request, context):
        return await self.models.RegisterModel(request, context)

    async def GetModel(self, request, context):
        return await self.models.GetModel(request, context)

    async def ListModels(self, request, context):
        return await self.models.ListModels(request, context)

    async def RollbackModel(self, request, context):
        return await self.jobs.RollbackModel(request, context)

    async def ListModelVersions(self, request, context):
        return await self.jobs.ListModelVersions(request, context)

    async def SubmitRetrain(self, request, context):
        return await self.jobs.SubmitRetrain(request, context)

    async def GetJob(self, request, context):
        return await self.jobs.GetJob(request, context)

    async def ListJobs(self, request, context):
        return await self.jobs.ListJobs(request, context)

    async def CancelJob(self, request, context):
        return await self.jobs.CancelJob(request, context)

    async def WatchJob(self, request, context):
        async for job in self.jobs.WatchJob(request, context):
            yield job

    async def GetFeedbackReport(self, request, context):
        return await self.feedback.GetFeedbackReport(request, context)

    async def ListAuditRecords(self, request, context):
        return await self.audit.ListAuditRecords(request, context)
