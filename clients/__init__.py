"""closedloop: the client library a trading service imports.

    from closedloop import AsyncClient
    async with AsyncClient("127.0.0.1:50051") as client:
        alert = await client.create_alert("fx-eurusd-v3", "drift", "high", metrics={"drift_score": 0.31})
        print([a.state for a in alert.actions])

The generated messages live in closedloop.v1 (alert_pb2, rules_pb2, retrain_pb2, monitor_pb2,
common_pb2); `observation_batch` and `outcome_batch` build MonitorService batches from columns..
"""

from ._calls import observation_batch, outcome_batch
from .client import AsyncClient, Client

__all__ = ["AsyncClient", "Client", "observation_batch", "outcome_batch"]
