"""The grpc.aio.ServerInterceptor (grpc.aio.server, the asyncio stack)."""

import asyncio
import contextvars
import inspect

import grpc
import grpc.aio

from . import _core
from .server import _iterate_in

_ABORTED = object()


class UsherAioServerInterceptor(grpc.aio.ServerInterceptor):
    """Protects a grpc.aio.server, with the same rules as UsherServerInterceptor.

        server = grpc.aio.server(interceptors=[UsherAioServerInterceptor("usher:50051", "api/invoices",
            required_scopes={"/billing.v1.Invoices/Get": ["invoices.read"]})])

    The channel to usher is a grpc.aio channel, opened on the server's event loop at the first call (or
    pass channel=, a grpc.aio.Channel you own). Handlers may be coroutines, async generators, or plain
    functions and generators (run by grpc.aio in its thread pool); each sees its call's claims in
    usher_grpc.claims().

    DPoP: grpc.aio does not show the interceptor the call's :authority, which the proof's htu is checked
    against: give authority="host:port" (the address callers use) to accept DPoP-bound tokens; without
    it a DPoP call is refused (INVALID_PROOF, saying so).
    """

    def __init__(self, target=None, audience=None, *, channel=None, credentials=None, **options):
        self.auth = _core.Authenticator(audience, **options)
        if channel is None and not target:
            raise ValueError("UsherAioServerInterceptor: usher's target (host:port) or a channel is required")
        self.target = target or "(the given channel)"
        self._credentials = credentials
        self._own_channel = channel is None
        self._channel = channel
        self._validate = _core.validate_method(channel) if channel is not None else None
        self._loop = None

    async def close(self):
        """Closes the channel to usher when the interceptor opened it."""
        if self._own_channel and self._channel is not None:
            await self._channel.close()
            self._channel = self._validate = None

    def cache_stats(self):
        return self.auth.cache.stats() if self.auth.cache is not None else None

    def _validator(self):
        loop = asyncio.get_running_loop()
        if self._own_channel and (self._validate is None or self._loop is not loop):
            # A grpc.aio channel belongs to the loop it was made on.
            self._channel = _core.new_channel(self.target, self._credentials, aio=True)
            self._validate = _core.validate_method(self._channel)
            self._loop = loop
        return self._validate

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.auth.protected(method):
            return handler
        return _wrap(handler, self, method, asyncio.get_running_loop())

    async def check(self, context, method):
        """The call's claims, or raises usher_grpc.Rejection."""
        is_tls, cert = _core.peer_tls(context.auth_context())
        prepared = self.auth.prepare(method, context.invocation_metadata(), is_tls, cert, None)
        resp = self.auth.cached(prepared)
        if resp is None:
            try:
                resp = await self._validator()(prepared.request,
                                               timeout=self.auth.call_timeout(context.time_remaining()))
            except asyncio.CancelledError:
                raise
            except Exception as err:  # unreachable, deadline, an error status, an unreadable answer: fail closed
                raise self.auth.unavailable(prepared, err) from None
            self.auth.remember(prepared, resp)
        return self.auth.verdict(prepared, resp)

    async def _authenticate(self, context, method):
        try:
            return await self.check(context, method)
        except _core.Rejection as r:
            await context.abort(r.code, r.message, r.trailers)
            raise AssertionError("context.abort returned")  # grpc.aio's abort always raises

    def _authenticate_from_thread(self, context, method, loop):
        """For a sync handler, which grpc.aio runs in a thread: the check runs on the server's loop.
        Returns the claims, or _ABORTED when the call was aborted and the handler must not run."""
        try:
            return asyncio.run_coroutine_threadsafe(self.check(context, method), loop).result()
        except _core.Rejection as r:
            aborted = context.abort(r.code, r.message, r.trailers)
            if inspect.isawaitable(aborted):  # a plain grpc.aio context
                asyncio.run_coroutine_threadsafe(aborted, loop).result()
            # grpc's _SyncServicerContext.abort raises in newer grpcio and returns in 1.51; either way the
            # status is sent, and grpc.aio raises its own abort error once the behavior returns.
            return _ABORTED


def _wrap(handler, interceptor, method, loop):
    """handler with each behavior authenticated first, keeping its kind (coroutine, async generator,
    plain function or generator), since grpc.aio picks how to run a behavior by its kind."""

    def wrap(behavior, streaming):
        if inspect.iscoroutinefunction(behavior):
            async def wrapped(request, context):
                token = _core.CLAIMS.set(await interceptor._authenticate(context, method))
                try:
                    return await behavior(request, context)
                finally:
                    _core.CLAIMS.reset(token)
            return wrapped
        if inspect.isasyncgenfunction(behavior):
            async def wrapped(request, context):
                # Checked before the handler's first line runs and before any response is sent. The
                # variable is set in this call's own task (grpc.aio runs each call in one).
                _core.CLAIMS.set(await interceptor._authenticate(context, method))
                async for item in behavior(request, context):
                    yield item
            return wrapped
        if streaming:
            # grpc.aio calls a sync streaming behavior on the loop and iterates it in its thread pool:
            # a generator, so that the check (which waits for the loop) runs at the first next().
            def wrapped(request, context):
                found = interceptor._authenticate_from_thread(context, method, loop)
                if found is _ABORTED:
                    return
                ctx = contextvars.copy_context()
                ctx.run(_core.CLAIMS.set, found)
                yield from _iterate_in(ctx, ctx.run(behavior, request, context))
            return wrapped

        def wrapped(request, context):
            found = interceptor._authenticate_from_thread(context, method, loop)
            if found is _ABORTED:
                return None
            ctx = contextvars.copy_context()
            ctx.run(_core.CLAIMS.set, found)
            return ctx.run(behavior, request, context)
        return wrapped

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), **kw)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), **kw)
    raise ValueError("usher_grpc: a method handler without a behavior")
