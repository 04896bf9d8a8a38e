"""The one wrapper around every RPC: request context, authentication, and the map from errors to status.

Not a grpc.aio ServerInterceptor: the services are registered through `WrappedHandlers`, one generic
handler that serves each method's handler wrapped once at start-up. Measured on the ingest path
(bench/README.md): grpc.aio's registered-method path keeps a pending task per registered method (34
here) and waits on all of them for every incoming call, twice, and an interceptor adds a coroutine per
call; together they cost more CPU per CreateAlert than the decision path does. A generic handler is
one dict look-up per call.

Every handler is wrapped so that:
- a request id (from `x-request-id` metadata, or new) is bound into the log context for the whole RPC
  (logging_setup.bind_request);
- bearer tokens are checked against the method's role when auth is on (auth.py), and the caller is
  bound for the handlers' model-scope checks (auth.require_model, auth.model_scopes);
- operator actions are recorded in the audit trail with their outcome, refused ones too (audit.py);
- every request message is checked for what no RPC accepts (validation.malformed: NUL in text,
  non-finite numbers, out-of-range timestamps): a single request's findings go to the handler's own
  validation, which reports them with its own; a stream's messages are rejected as they are read;
- bytes that do not parse as the method's request type (invalid UTF-8, nesting past protobuf's depth
  limit) are INVALID_ARGUMENT: grpcio would answer UNKNOWN for an exception in its deserializer, so
  ours never raises and the handler wrapper rejects;
- a database driver error is translated once, here (db.pool.database_error: UNAVAILABLE etc.);
- a `ClosedLoopError` becomes its status code, with google.rpc.BadRequest details for bad input;
- anything else is a bug: logged once with its traceback and answered INTERNAL, never leaked.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from closedloop.v1 import monitor_pb2

from ..db.pool import database_error
from ..errors import ClosedLoopError, FieldViolation, InvalidArgument, to_status
from ..logging_setup import bind_request
from .audit import AUDITED_METHODS, Auditor
from .auth import Authenticator, bind_caller
from .validation import malformed, pending_malformed
from ..metrics import timed_rpc

log = structlog.get_logger(__name__)

# Methods anyone may call without a token: health checks and reflection.
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


async def _abort(context: grpc.aio.ServicerContext, exc: ClosedLoopError) -> None:
    code, message, status = to_status(exc)
    if status is not None:
        await context.abort_with_status(rpc_status.to_status(status))
    await context.abort(code, message)


class _Recorder:
    """Stands in for the server while a generated `add_*_to_server` registers its handlers."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        for name, handler in handlers.items():
            self.methods[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.generic.extend(handlers)


class WrappedHandlers(grpc.GenericRpcHandler):
    """Every service's methods, wrapped once, behind one generic handler.

    `add(register, *args)` runs a generated `add_*_to_server(servicer, server)` (or anything of that
    shape, like grpc's reflection) against a recorder; `install(server)` registers the lot."""

    def __init__(self, authenticator: Authenticator | None, auditor: Auditor | None = None) -> None:
        self.authenticator = authenticator
        self.auditor = auditor
        self._recorder = _Recorder()
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def add(self, register, *args) -> None:
        """`register(*args, recorder)`: the generated add_*_to_server(servicer, server) calling convention."""
        register(*args, self._recorder)

    def install(self, server: grpc.aio.Server) -> None:
        for method, handler in self._recorder.methods.items():
            self._wrapped[method] = self._wrap(method, handler)
        server.add_generic_rpc_handlers((self,))

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        public = method.startswith(PUBLIC_PREFIXES)
        return _wrap(handler, method, None if public else self.authenticator,
                     self.auditor if method in AUDITED_METHODS else None)

    def service(self, details: grpc.HandlerCallDetails):
        try:
            return self._wrapped[details.method]
        except KeyError:
            pass
        # A service registered only as a generic handler (older generated code): wrapped on first use.
        for generic in self._recorder.generic:
            handler = generic.service(details)
            if handler is not None:
                wrapped = self._wrapped[details.method] = self._wrap(details.method, handler)
                return wrapped
        return None  # grpc answers UNIMPLEMENTED


_ids = itertools.count(1)
_ID_PREFIX = f"{os.getpid():x}-"


class _Undecodable:
    """Stands in for a request whose bytes did not parse; rejected once the handler wrapper runs."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserialize):
    """The method's own deserializer, returning _Undecodable instead of raising."""
    if deserialize is None:
        return None

    def parse(raw: bytes):
        try:
            return deserialize(raw)
        except (DecodeError, RecursionError) as exc:
            return _Undecodable(str(exc) or type(exc).__name__)
    return parse


def _malformed(request, prefix: str = "") -> list:
    """What no RPC accepts in a request; InvalidArgument for bytes that did not parse at all."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(FieldViolation(prefix.rstrip(".") or "request",
                                             f"not a valid request message: {request.reason}"))
    if isinstance(request, _HANDLER_CHECKED):
        return []
    return malformed(request, prefix) if isinstance(request, Message) else []


# Messages whose handler checks all of what `malformed` would (api/monitor.py: text, numbers, times of
# an observation batch, vectorised): walking a batch's columns here cost ~10% of the server's CPU.
_HANDLER_CHECKED = (monitor_pb2.ObservationBatch,)


async def _checked_stream(requests):
    """A request stream whose messages are checked as they arrive; field paths name the position."""
    index = 0
    async for request in requests:
        violations = _malformed(request, f"requests[{index}].")
        if violations:
            raise InvalidArgument(violations)
        yield request
        index += 1


def _unconsumed(violations: list) -> InvalidArgument | None:
    """The rejection a handler owes for a malformed request when its validation did not raise it."""
    if violations and pending_malformed.get():
        pending_malformed.set([])
        return InvalidArgument(violations)
    return None


def _wrap(handler: grpc.RpcMethodHandler, method: str, authenticator, auditor) -> grpc.RpcMethodHandler:
    rpc_name = method.rsplit("/", 1)[-1]

    def bind(context) -> None:
        metadata = context.invocation_metadata() or ()
        request_id = next((v for k, v in metadata if k == "x-request-id"), None) or f"{_ID_PREFIX}{next(_ids)}"
        bind_request(rpc=rpc_name, request_id=request_id)
        bind_caller(None)
        if authenticator is not None:
            token = authenticator.identify(next((v for k, v in metadata if k == "authorization"), None))
            bind_caller(token)  # before the role check, so a refused call is audited under its name
            authenticator.authorize(token, method)

    async def on_error(exc: Exception, context, audit=None) -> None:
        # context.abort() raises an AbortError that must propagate untouched.
        if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
            raise exc
        exc = database_error(exc) or exc
        status = None
        if isinstance(exc, ClosedLoopError):
            log.info("rpc.rejected", code=exc.code.name, error=exc.message[:500])
            code, message, status = to_status(exc)
        elif isinstance(exc, NotImplementedError):
            code, message = grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server"
        else:
            log.exception("rpc.internal_error")
            code, message = grpc.StatusCode.INTERNAL, "internal error; the server log has the details"
        if audit is not None:
            # Before the abort: grpc.aio sends the status at once, and the caller may read the trail next.
            await audit(code.name, message)
        if status is not None:
            await context.abort_with_status(rpc_status.to_status(status))
        await context.abort(code, message)

    def guard(inner, streaming_requests: bool):
        # A request stream is checked message by message as the handler reads it; a single request
        # before the handler starts, its findings handed to the handler's validation.
        def start(request, context) -> tuple[object, list]:
            bind(context)
            if streaming_requests:
                return _checked_stream(request), []
            violations = _malformed(request)
            pending_malformed.set(violations)
            return request, violations

        # Streaming handlers are async generators, except those written with context.write()
        # (grpc's health Watch), which are coroutine functions like unary ones.
        if inspect.isasyncgenfunction(inner):
            async def stream(request, context):
                violations = []
                try:
                    request, violations = start(request, context)
                    async for item in inner(request, context):
                        if (error := _unconsumed(violations)) is not None:
                            raise error  # nothing goes out for a malformed request
                        yield item
                    if (error := _unconsumed(violations)) is not None:
                        raise error
                except Exception as exc:  # noqa: BLE001 - mapped to a status in on_error
                    await on_error(_unconsumed(violations) or exc, context)
            return stream

        async def call(request, context):
            violations = []
            try:
                request, violations = start(request, context)
                reply = await inner(request, context)
                if (error := _unconsumed(violations)) is not None:
                    raise error
                return reply
            except Exception as exc:  # noqa: BLE001 - mapped to a status in on_error
                await on_error(_unconsumed(violations) or exc, context)
        if auditor is None:
            return call

        async def audited(request, context):
            async def record(code: str, message: str) -> None:
                if code != "UNAUTHENTICATED":  # no name to record; the log has it (audit.py)
                    await auditor.record(method, request if isinstance(request, Message) else None, code, message)
            violations = []
            try:
                checked, violations = start(request, context)
                reply = await inner(checked, context)
                if (error := _unconsumed(violations)) is not None:
                    raise error
            except asyncio.CancelledError:
                await record("CANCELLED", "the client cancelled the call")
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status in on_error
                await on_error(_unconsumed(violations) or exc, context, record)
            await record("OK", "")
            return reply
        return audited

    for kind, factory, streaming_requests in (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True)):
        inner = getattr(handler, kind)
        if inner is not None:
            return factory(guard(timed_rpc(inner, rpc_name, kind), streaming_requests),
                           request_deserializer=_tolerant(handler.request_deserializer),
                           response_serializer=handler.response_serializer)
    return handler
