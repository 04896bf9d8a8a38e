"""Property: whatever a client sends to any RPC of any service, the answer is never INTERNAL or UNKNOWN,
and the server keeps serving (issue 10, point 5).

The RPCs are enumerated from the service descriptors, so a new RPC or field is fuzzed without editing
this file. Requests are generated from the message descriptors (random text with NUL and odd unicode,
extreme and non-finite numbers, out-of-range timestamps, unknown enum values, forged page tokens),
or are raw random bytes. One real server and database serve the whole run; the property runs in a
thread with a blocking channel while the server's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import pkgutil

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.server.api import paging
from closedloop.v1 import common_pb2

def _every_service():
    """Every service of every closedloop.v1 proto module, found by import: a new service or RPC is
    fuzzed without anyone listing it here. Plus grpc's Health, which the server also serves."""
    import closedloop.v1 as v1

    services = [health_pb2.DESCRIPTOR.services_by_name["Health"]]
    for module in sorted(m.name for m in pkgutil.iter_modules(v1.__path__) if m.name.endswith("_pb2")):
        services += importlib.import_module(f"closedloop.v1.{module}").DESCRIPTOR.services_by_name.values()
    return services


SERVICES = _every_service()
METHODS = [m for service in SERVICES for m in service.methods]
# 2 cores shared with the rest of the suite: bounded so the whole property takes well under a minute.
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
CALL_TIMEOUT_S = 10.0
FD = pb_descriptor.FieldDescriptor
INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1), FD.TYPE_SINT32: (-(2**31), 2**31 - 1), FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_ENUM: (-(2**31), 2**31 - 1), FD.TYPE_INT64: (-(2**63), 2**63 - 1), FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1), FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}


def _token(cursor, filters) -> str:
    raw = json.dumps({"c": cursor, "f": paging._fingerprint(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                     max_leaves=6)
# Tokens that carry the fingerprint of the default filters, so the forged cursor itself is parsed.
_forged_tokens = st.builds(
    _token, st.one_of(_json, st.fixed_dictionaries({"t": _json, "id": _json}), st.fixed_dictionaries({"id": _json}),
                      st.fixed_dictionaries({"m": _json})),
    st.sampled_from([{}, {"model_id": "", "state": 0},
                     {"model_id": "", "type": "", "state": 0, "start": "", "end": ""}]))
_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "a\x00b", "²", "١٢", "9223372036854775808", "99999999999999999999", "-1", "0", "1",
                     "fx-eurusd", "drift", "x" * 5000, "\U0001f600", "\u202e", "ﬀ", "NaN", "rule r when true then record"]),
    _forged_tokens,
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
)


def _scalar(fd) -> st.SearchStrategy:
    if fd.type == FD.TYPE_STRING:
        return _strings
    if fd.type == FD.TYPE_BYTES:
        return st.binary(max_size=40)
    if fd.type == FD.TYPE_BOOL:
        return st.booleans()
    if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        extremes = st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e308, -1e308, 5e-324])
        return st.one_of(st.floats(width=64 if fd.type == FD.TYPE_DOUBLE else 32), extremes)
    low, high = INT_RANGES[fd.type]
    return st.one_of(st.integers(low, high), st.sampled_from([low, high, 0, -1 if low else 1, 1]),
                     st.integers(-5, 40).filter(lambda n: low <= n <= high))


# Times at and past the edges of what Timestamp, Duration and datetime can hold, where arithmetic on
# them (a window before a start, a cooldown after a time) overflows.
_seconds = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(
    [-62135596800, -62135596801, 253402300799, 253402300800, 315576000000, -315576000000, 315576000001,
     0, 1, -1, 86400, 1_800_000_000]))
_nanos = st.one_of(st.sampled_from([0, 999_999_999, 1_000_000_000, -1, -999_999_999]), st.integers(-(2**31), 2**31 - 1))
WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


@st.composite
def messages(draw, descriptor, depth: int = 0):
    message = GetMessageClass(descriptor)()
    if descriptor.full_name in WELL_KNOWN:
        message.seconds, message.nanos = draw(_seconds), draw(_nanos)
        return message
    for fd in descriptor.fields:
        if not draw(st.integers(0, 2)):  # about a third of the fields stay unset
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            target = getattr(message, fd.name)
            for key in draw(st.lists(_scalar(key_fd), max_size=3)):
                if value_fd.message_type is None:
                    target[key] = draw(_scalar(value_fd))
                elif depth < 4:
                    target[key].CopyFrom(draw(messages(value_fd.message_type, depth + 1)))
        elif fd.message_type is not None:
            if depth >= 4:
                continue
            if fd.is_repeated:
                for item in draw(st.lists(messages(fd.message_type, depth + 1), max_size=2)):
                    getattr(message, fd.name).add().CopyFrom(item)
            else:
                getattr(message, fd.name).CopyFrom(draw(messages(fd.message_type, depth + 1)))
        elif fd.is_repeated:
            getattr(message, fd.name).extend(draw(st.lists(_scalar(fd), max_size=3)))
        else:
            setattr(message, fd.name, draw(_scalar(fd)))
    return message


@st.composite
def calls(draw):
    """(method, list of serialized requests): one for a unary request, one to three for a stream."""
    method = draw(st.sampled_from(METHODS))
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    payloads = []
    for _ in range(count):
        if draw(st.integers(0, 9)) == 0:
            payloads.append(draw(st.binary(max_size=200)))  # raw random bytes
        else:
            payloads.append(draw(messages(method.input_type)).SerializeToString())
    return method, payloads


def _status(channel: grpc.Channel, method, payloads: list[bytes]) -> grpc.StatusCode:
    """Call with raw bytes; the status the server answered (a stream: after its first reply)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
        (method.client_streaming, method.server_streaming)]
    request = iter(payloads) if method.client_streaming else payloads[0]
    try:
        if not method.server_streaming:
            kind(path)(request, timeout=CALL_TIMEOUT_S)
            return grpc.StatusCode.OK
        stream = kind(path)(request, timeout=CALL_TIMEOUT_S)
        try:
            next(stream, None)  # a watch may go on for ever: its first reply is proof enough
        finally:
            stream.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def _fuzz(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        @FUZZ
        @given(calls())
        def property_(call):
            method, payloads = call
            code = _status(channel, method, payloads)
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (method.full_name, payloads)

        property_()


@pytest.mark.slow
async def test_no_request_to_any_rpc_is_internal_or_unknown(server, client):
    assert {"AlertService", "RuleService", "RetrainService", "NotificationService", "Health"} <= {s.name for s in SERVICES}
    await asyncio.to_thread(_fuzz, server.test_target)
    # and the server still serves
    async with grpc.aio.insecure_channel(server.test_target) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    created = await client.create_alert("fx-eurusd", "drift", common_pb2.SEVERITY_LOW, metrics={"drift_score": 0.01})
    assert created.id
