"""The grpc.ServerInterceptor (grpc.server, the thread-pool stack)."""

import contextvars

import grpc

from . import _core


class UsherServerInterceptor(grpc.ServerInterceptor):
    """Protects a grpc.server: every call but the skipped methods needs a token usher accepts for
    audience, and the handler runs only when usher said valid, with the claims in usher_grpc.claims().

        server = grpc.server(futures.ThreadPoolExecutor(),
                             interceptors=[UsherServerInterceptor("usher:50051", "api/invoices",
                                 required_scopes={"/billing.v1.Invoices/Get": ["invoices.read"]})])

    target: usher's gRPC address ("dns:///usher-headless.platform.svc.cluster.local:50051"); or channel: a grpc.Channel you
    own (then credentials is unused). credentials: grpc.ChannelCredentials for TLS to usher (None:
    plaintext). The other keyword arguments are the Authenticator's (see usher_grpc._core.Authenticator):
    required_scopes, skip_methods, skip_defaults, terse, timeout, cache, cache_entries, cache_ttl, clock,
    authority.

    It fails closed: when usher cannot answer, or answers what the reason table does not know, the call
    is refused with UNAVAILABLE.
    """

    def __init__(self, target=None, audience=None, *, channel=None, credentials=None, **options):
        self.auth = _core.Authenticator(audience, **options)
        if channel is None:
            if not target:
                raise ValueError("UsherServerInterceptor: usher's target (host:port) or a channel is required")
            channel, self._own_channel = _core.new_channel(target, credentials), True
        else:
            self._own_channel = False
        self.target = target or "(the given channel)"
        self._channel = channel
        self._validate = _core.validate_method(channel)

    def close(self):
        """Closes the channel to usher when the interceptor opened it."""
        if self._own_channel:
            self._channel.close()

    def cache_stats(self):
        return self.auth.cache.stats() if self.auth.cache is not None else None

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.auth.protected(method):
            return handler
        return _wrap(handler, lambda context: self._authenticate(context, method))

    def _authenticate(self, context, method):
        """The call's claims, or aborts the call (context.abort raises)."""
        try:
            return self.check(context, method)
        except _core.Rejection as r:
            context.set_trailing_metadata(r.trailers)
            context.abort(r.code, r.message)
            raise AssertionError("context.abort returned")  # grpc's abort always raises

    def check(self, context, method):
        """The call's claims, or raises usher_grpc.Rejection."""
        is_tls, cert = _core.peer_tls(context.auth_context())
        prepared = self.auth.prepare(method, context.invocation_metadata(), is_tls, cert, _call_authority(context))
        resp = self.auth.cached(prepared)
        if resp is None:
            try:
                resp = self._validate(prepared.request, timeout=self.auth.call_timeout(context.time_remaining()))
            except Exception as err:  # unreachable, deadline, an error status, an unreadable answer: fail closed
                raise self.auth.unavailable(prepared, err) from None
            self.auth.remember(prepared, resp)
        return self.auth.verdict(prepared, resp)


def _call_authority(context):
    """The call's :authority: grpc.server keeps it in its call details (no public accessor)."""
    try:
        host = context._rpc_event.call_details.host
    except AttributeError:
        return None
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    return host or None


def _wrap(handler, authenticate):
    """handler with each behavior authenticated first, and run with the claims in the context var."""

    def unary(behavior):
        def wrapped(request, context):
            ctx = contextvars.copy_context()
            ctx.run(_core.CLAIMS.set, authenticate(context))
            return ctx.run(behavior, request, context)
        return wrapped

    def streaming(behavior):
        def wrapped(request, context):
            # Checked here, before the handler runs and before any response is sent.
            ctx = contextvars.copy_context()
            ctx.run(_core.CLAIMS.set, authenticate(context))
            return _iterate_in(ctx, ctx.run(behavior, request, context))
        return wrapped

    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)
    raise ValueError("usher_grpc: a method handler without a behavior")


def _iterate_in(ctx, responses):
    """Yields responses, each one produced inside ctx (where the claims are set)."""
    it = ctx.run(iter, responses)
    while True:
        try:
            item = ctx.run(next, it)
        except StopIteration:
            return
        yield item
