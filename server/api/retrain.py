"""RetrainService: one servicer assembled from its three parts (models, jobs, feedback)."""

from __future__ import annotations

import asyncpg

from closedloop.v1 import retrain_pb2_grpc

from ..config import Settings
from ..loop.model_cache import ModelFactsCache
from ..loop.rule_engine import RuleEngine
from .feedback_report import FeedbackMixin
from .jobs import JobsMixin
from .models import ModelsMixin


class RetrainServicer(ModelsMixin, JobsMixin, FeedbackMixin, retrain_pb2_grpc.RetrainServiceServicer):
    def __init__(self, pool: asyncpg.Pool, settings: Settings, facts: ModelFactsCache, rules: RuleEngine) -> None:
        self.pool = pool
        self.rules = rules
        self.settings = settings
        self.facts = facts
