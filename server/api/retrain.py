"""RetrainService: one servicer assembled from its three parts (models, jobs; feedback follows)."""

from __future__ import annotations

import asyncpg

from closedloop.v1 import retrain_pb2_grpc

from ..config import Settings
from ..loop.facts import ModelFactsCache
from .jobs import JobsMixin
from .models import ModelsMixin


class RetrainServicer(ModelsMixin, JobsMixin, retrain_pb2_grpc.RetrainServiceServicer):
    def __init__(self, pool: asyncpg.Pool, settings: Settings, facts: ModelFactsCache) -> None:
        self.pool = pool
        self.settings = settings
        self.facts = facts
