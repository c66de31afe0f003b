package grpcapi

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-dev/usher/service"
)

// Health service names (grpc.health.v1.Health), all NOT_SERVING once
// shutdown began:
//
//   - ServiceName ("usher.v1.TokenService"), for readiness: SERVING once every
//     issuer's keys were tried and while at least one issuer can answer: it
//     holds keys, or it answers opaque tokens and its introspection endpoint
//     is known (configured, or read from discovery); NOT_SERVING otherwise,
//     since a replica that can only answer KEYS_UNAVAILABLE should get no
//     traffic. An opaque-only deployment is ready once its endpoints are
//     known: whether they answer is seen per call (ISSUER_UNAVAILABLE).
//   - "" (the whole server), for liveness and start-up: SERVING once every
//     issuer's keys were tried, whatever they hold. Restarting a replica
//     never brings an issuer's keys back, so this one does not follow them.
//   - IssuerHealthName(issuer): SERVING while that issuer can answer every
//     kind of token it is configured for (keys held, unless it has no key
//     set; its introspection endpoint known, if it has introspection),
//     NOT_SERVING otherwise (or when it is no longer configured), so that
//     one bad issuer shows on a dashboard without taking the replica out.
const (
	ServiceName        = "usher.v1.TokenService"
	IssuerHealthPrefix = ServiceName + "/issuer/"
)

// IssuerHealthName is the health service name of one configured issuer, e.g.
// "usher.v1.TokenService/issuer/https://id.example.com".
func IssuerHealthName(issuer string) string { return IssuerHealthPrefix + issuer }

// hasKeys reports whether an issuer holds a key set to verify with: one
// that is not past max_stale.
func hasKeys(st service.IssuerStatus) bool { return len(st.KeyIDs) > 0 && !st.Stale }

// canIntrospect reports whether an issuer answers opaque tokens and knows
// where to ask.
func canIntrospect(st service.IssuerStatus) bool {
	return st.Introspection && st.IntrospectionEndpoint != ""
}

// canAnswer reports whether an issuer can answer some token: readiness.
func canAnswer(st service.IssuerStatus) bool { return hasKeys(st) || canIntrospect(st) }

// issuerServing reports whether an issuer can answer every kind of token it
// is configured for: its own health status.
func issuerServing(st service.IssuerStatus) bool {
	return (st.OpaqueOnly || hasKeys(st)) && (!st.Introspection || canIntrospect(st))
}

// healthMonitor sets the health statuses from the validator in service: at
// every tick, when it is swapped, and once the first one has tried every
// issuer's keys (start-up).
type healthMonitor struct {
	hs      *health.Server
	srv     *Server
	started atomic.Bool   // the first validator tried every issuer's keys
	tried   chan struct{} // started became true
	last    map[string]healthpb.HealthCheckResponse_ServingStatus
}

// newHealthMonitor watches v, the first validator, until it has tried every
// issuer's keys or ctx is done. A reload swaps in validators that have.
func newHealthMonitor(ctx context.Context, hs *health.Server, srv *Server, v *service.Validator) *healthMonitor {
	m := &healthMonitor{hs: hs, srv: srv, tried: make(chan struct{}, 1), last: map[string]healthpb.HealthCheckResponse_ServingStatus{}}
	go func() {
		if v.WaitTried(ctx) == nil {
			m.started.Store(true)
			m.tried <- struct{}{}
		}
	}()
	return m
}

// run follows the validator until ctx is done, then says NOT_SERVING
// everywhere (shutdown).
func (m *healthMonitor) run(ctx context.Context, ticks <-chan time.Time) {
	defer m.hs.Shutdown()
	for {
		select {
		case <-ticks:
			m.srv.sampler.Flush(ctx)
		case <-m.srv.swapped:
		case <-m.tried:
		case <-ctx.Done():
			m.srv.sampler.FlushAll(ctx)
			return
		}
		m.update()
	}
}

// update sets every status from the validator in service now.
func (m *healthMonitor) update() {
	var names []string
	next := map[string]healthpb.HealthCheckResponse_ServingStatus{}
	anyKeys := false
	for _, st := range m.srv.Current().Issuers() {
		name := IssuerHealthName(st.Issuer)
		names = append(names, name)
		next[name] = servingIf(issuerServing(st))
		anyKeys = anyKeys || canAnswer(st)
	}
	for name := range m.last {
		if _, ok := next[name]; !ok && name != "" && name != ServiceName { // an issuer a reload removed
			names = append(names, name)
			next[name] = healthpb.HealthCheckResponse_NOT_SERVING
		}
	}
	started := m.started.Load()
	next[ServiceName], next[""] = servingIf(started && anyKeys), servingIf(started)
	// Issuers first and "" last: a watcher that sees "" change sees the
	// others as of the same update.
	for _, name := range append(names, ServiceName, "") {
		if st := next[name]; m.last[name] != st {
			m.hs.SetServingStatus(name, st)
			m.last[name] = st
		}
	}
}

func servingIf(ok bool) healthpb.HealthCheckResponse_ServingStatus {
	if ok {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}
