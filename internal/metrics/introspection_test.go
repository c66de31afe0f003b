package metrics_test

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-dev/usher/internal/metrics"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// The engine type-asserts its observer for introspection: Metrics must
// implement it, and count calls by issuer and outcome, their latency, and
// cache hits, misses and callers turned away, with "other" for an empty
// issuer.
func TestObserveIntrospection_Labels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	var obs service.Observer = m
	io, ok := obs.(service.IntrospectionObserver)
	if !ok {
		t.Fatal("Metrics does not implement service.IntrospectionObserver: the engine would not report introspection")
	}
	const iss = "https://a.example"
	io.ObserveIntrospection(service.IntrospectionEvent{Issuer: iss, Outcome: service.IntrospectionActive, Took: 3 * time.Millisecond})
	io.ObserveIntrospection(service.IntrospectionEvent{Issuer: iss, Outcome: service.IntrospectionActive, Took: time.Millisecond})
	io.ObserveIntrospection(service.IntrospectionEvent{Issuer: iss, Outcome: service.IntrospectionUnauthorized, Took: time.Millisecond})
	io.ObserveIntrospection(service.IntrospectionEvent{Outcome: service.IntrospectionTimeout, Took: 2 * time.Second})
	io.ObserveIntrospectionLookup(service.IntrospectionLookup{Issuer: iss, Hit: true})
	io.ObserveIntrospectionLookup(service.IntrospectionLookup{Issuer: iss, Hit: true})
	io.ObserveIntrospectionLookup(service.IntrospectionLookup{Issuer: iss})
	io.ObserveIntrospectionLookup(service.IntrospectionLookup{Issuer: iss, Shed: true})

	calls := counters(t, reg, "usher_introspection_calls_total")
	for key, want := range map[string]float64{
		"issuer=https://a.example,outcome=active":       2,
		"issuer=https://a.example,outcome=unauthorized": 1,
		"issuer=other,outcome=timeout":                  1,
	} {
		if calls[key] != want {
			t.Errorf("usher_introspection_calls_total{%s} = %v, want %v (all: %v)", key, calls[key], want, calls)
		}
	}
	if len(calls) != 3 {
		t.Errorf("usher_introspection_calls_total = %v", calls)
	}
	for name, want := range map[string]float64{
		"usher_introspection_cache_hits_total":   2,
		"usher_introspection_cache_misses_total": 2,
		"usher_introspection_shed_total":         1,
	} {
		if got := counters(t, reg, name); got["issuer="+iss] != want || len(got) != 1 {
			t.Errorf("%s = %v, want {issuer=%s: %v}", name, got, iss, want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "usher_introspection_seconds" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			h := mm.GetHistogram()
			if mm.GetLabel()[0].GetValue() == iss && (h.GetSampleCount() != 3 || h.GetSampleSum() < 0.004 || h.GetSampleSum() > 0.006) {
				t.Errorf("usher_introspection_seconds{issuer=%s}: %d samples, sum %v", iss, h.GetSampleCount(), h.GetSampleSum())
			}
		}
		return
	}
	t.Error("no usher_introspection_seconds")
}

// Through a real engine and a real introspection endpoint: the engine
// finds the introspection side of the observer it is given.
func TestObserveIntrospection_FromTheEngine(t *testing.T) {
	ctx := testkit.Context(t)
	reg := prometheus.NewRegistry()
	s := testkit.NewIntrospectionServer(t)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{s.Config(t)}, service.WithObserver(metrics.New(reg)))
	tok := "opaque-" + rand.Text()
	s.Activate(tok, testkit.Claims(s.URL()))
	for range 3 {
		if got := v.Validate(ctx, tok, "api/users", nil); !got.Valid() {
			t.Fatalf("%v: %s", got.Reason, got.Message)
		}
	}
	v.Validate(ctx, "opaque-"+rand.Text(), "api/users", nil)
	if got := counters(t, reg, "usher_introspection_calls_total"); got["issuer="+s.URL()+",outcome=active"] != 1 || got["issuer="+s.URL()+",outcome=inactive"] != 1 {
		t.Fatalf("usher_introspection_calls_total = %v", got)
	}
	if got := counters(t, reg, "usher_introspection_cache_hits_total"); got["issuer="+s.URL()] != 2 {
		t.Fatalf("usher_introspection_cache_hits_total = %v", got)
	}
	if got := counters(t, reg, "usher_verdicts_total"); got["audience=api/users,issuer="+s.URL()+",reason=INACTIVE"] != 1 {
		t.Fatalf("usher_verdicts_total = %v", got)
	}
}
