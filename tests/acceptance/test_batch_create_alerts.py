"""BatchCreateAlerts (issue 12): all-or-nothing validation, per-item writes, against the real server."""

from __future__ import annotations

import grpc
import pytest

from closedloop.v1 import alert_pb2, common_pb2

from .helpers import synthetic_model
from .test_alerts import count_alerts, violations



def drift(model_id: str, score: float, request_id: str) -> dict:
    return {"model_id": model_id, "type": "drift", "severity": "high", "metrics": {"drift_score": score},
            "request_id": request_id}


async def test_a_batch_is_written_and_decided_like_single_alerts(client, server):
    await client.register_model(synthetic_model("fx-batch"))
    before = await count_alerts(server)
    reply = await client.batch_create_alerts([drift("fx-batch", 0.4, "b-1"), drift("fx-other", 0.01, "b-2"),
                                              drift("fx-batch", 0.4, "b-3")])
    assert [r.code for r in reply.results] == [0, 0, 0]
    first, quiet, second = (r.alert for r in reply.results)
    assert await count_alerts(server) == before + 3
    # In request order, each with its own decision: the first queues a retrain; the third is decided
    # knowing it (the rule's cooldown, or joining its job), so no second job.
    assert first.state == alert_pb2.ALERT_STATE_ACTIONED and first.actions[0].rule == "drift_auto_retrain"
    assert first.actions[0].job_id
    assert second.actions[0].rule == "drift_auto_retrain" and second.actions[0].job_id in ("", first.actions[0].job_id)
    assert not quiet.actions and quiet.model_id == "fx-other"
    assert (await client.get_alert(first.id)) == first  # what the reply said is what was stored
    # Idempotent per item: the same batch again returns the stored alerts and writes nothing.
    again = await client.batch_create_alerts([drift("fx-batch", 0.4, "b-1"), drift("fx-other", 0.01, "b-2"),
                                              drift("fx-batch", 0.4, "b-3")])
    assert [r.alert.id for r in again.results] == [first.id, quiet.id, second.id]
    assert await count_alerts(server) == before + 3


async def test_one_refused_item_does_not_fail_its_neighbours(client, server):
    await client.batch_create_alerts([drift("fx-x", 0.01, "reused")])
    reply = await client.batch_create_alerts([drift("fx-x", 0.01, "fresh-1"), drift("fx-x", 0.02, "reused"),
                                              drift("fx-x", 0.01, "fresh-2")])
    codes = [r.code for r in reply.results]
    assert codes == [0, grpc.StatusCode.ALREADY_EXISTS.value[0], 0]
    assert "reused" in reply.results[1].message and not reply.results[1].HasField("alert")
    assert reply.results[0].alert.id and reply.results[2].alert.id


@pytest.mark.parametrize("requests, field", [
    ([], "requests"),
    ([drift("fx-ok", 0.1, "v-1"), drift("", 0.1, "v-2")], "requests[1].alert.model_id"),
])
async def test_an_invalid_item_fails_the_call_naming_it_and_writes_nothing(client, server, requests, field):
    before = await count_alerts(server)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.batch_create_alerts(requests)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value)
    assert await count_alerts(server) == before


async def test_more_than_the_limit_is_refused(client, server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.batch_create_alerts([drift("fx-many", 0.01, f"m-{i}") for i in range(1001)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000" in violations(err.value)["requests"]
