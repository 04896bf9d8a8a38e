"""The one server interceptor: request context, authentication, and the map from errors to status.

Every handler is wrapped so that:
- a request id is bound into structlog's context for the whole RPC (from `x-request-id` metadata, or new);
- bearer tokens are checked against the method's role when auth is on (auth.py);
- a database driver error is translated once, here (db.pool.database_error: UNAVAILABLE etc.);
- a `ClosedLoopError` becomes its status code, with google.rpc.BadRequest details for bad input;
- anything else is a bug: logged once with its traceback and answered INTERNAL, never leaked.
"""

from __future__ import annotations

import inspect
import itertools
import os

import grpc
import structlog
from grpc_status import rpc_status

from ..db.pool import database_error
from ..metrics import timed_rpc
from ..errors import ClosedLoopError, to_status
from .auth import Authenticator

log = structlog.get_logger(__name__)

# Methods anyone may call without a token: health checks and reflection.
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


async def _abort(context: grpc.aio.ServicerContext, exc: ClosedLoopError) -> None:
    code, message, status = to_status(exc)
    if status is not None:
        await context.abort_with_status(rpc_status.to_status(status))
    await context.abort(code, message)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator | None) -> None:
        self.authenticator = authenticator
        # Wrapped handlers per method: building handler objects on every call costs more than the
        # handlers of a busy ingest path do themselves. Per-call data (metadata) is read from the
        # context inside the wrapper instead.
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        method = details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = await continuation(details)
        public = method.startswith(PUBLIC_PREFIXES)
        wrapped = None if handler is None else _wrap(handler, method, None if public else self.authenticator)
        self._wrapped[method] = wrapped
        return wrapped


_ids = itertools.count(1)
_ID_PREFIX = f"{os.getpid():x}-"


def _wrap(handler: grpc.RpcMethodHandler, method: str, authenticator) -> grpc.RpcMethodHandler:
    rpc_name = method.rsplit("/", 1)[-1]

    def bind(context) -> None:
        metadata = context.invocation_metadata() or ()
        request_id = next((v for k, v in metadata if k == "x-request-id"), None) or f"{_ID_PREFIX}{next(_ids)}"
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=rpc_name, request_id=request_id)
        if authenticator is not None:
            token = next((v for k, v in metadata if k == "authorization"), None)
            authenticator.check(method, token)

    async def on_error(exc: Exception, context) -> None:
        # context.abort() raises an AbortError that must propagate untouched.
        if isinstance(exc, (grpc.aio.AbortError, grpc.RpcError)):
            raise exc
        exc = database_error(exc) or exc
        if isinstance(exc, ClosedLoopError):
            log.info("rpc.rejected", code=exc.code.name, error=exc.message[:500])
            await _abort(context, exc)
        if isinstance(exc, NotImplementedError):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server")
        log.exception("rpc.internal_error")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")

    def guard(inner):
        # Streaming handlers are async generators, except those written with context.write()
        # (grpc's health Watch), which are coroutine functions like unary ones.
        if inspect.isasyncgenfunction(inner):
            async def stream(request, context):
                try:
                    bind(context)
                    async for item in inner(request, context):
                        yield item
                except Exception as exc:  # noqa: BLE001 - mapped to a status in on_error
                    await on_error(exc, context)
            return stream

        async def call(request, context):
            try:
                bind(context)
                return await inner(request, context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status in on_error
                await on_error(exc, context)
        return call

    for kind, factory in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                          ("unary_stream", grpc.unary_stream_rpc_method_handler),
                          ("stream_unary", grpc.stream_unary_rpc_method_handler),
                          ("stream_stream", grpc.stream_stream_rpc_method_handler)):
        inner = getattr(handler, kind)
        if inner is not None:
            return factory(guard(timed_rpc(inner, rpc_name, kind)), request_deserializer=handler.request_deserializer,
                           response_serializer=handler.response_serializer)
    return handler
