package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-dev/usher/internal/metrics"
	"github.com/usher-dev/usher/service"
)

// counters gathers reg and returns each sample of name by its labels
// (name=value pairs joined with ",").
func counters(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if key != "" {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}

// Values the engine leaves empty (an untrusted issuer, an unregistered
// audience) are counted under "other": label cardinality stays bounded.
func TestObserveVerdict_Labels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonValid, Issuer: "https://a.example", Audience: "api/users", Took: time.Millisecond})
	m.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonUntrustedIssuer, Took: time.Millisecond})
	m.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Issuer: "https://a.example", Audience: "api/invoices", TokenAudience: "api/users"})
	m.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Issuer: "https://a.example"})

	verdicts := counters(t, reg, "usher_verdicts_total")
	for key, want := range map[string]float64{
		"audience=api/users,issuer=https://a.example,reason=VALID":                1,
		"audience=other,issuer=other,reason=UNTRUSTED_ISSUER":                     1,
		"audience=api/invoices,issuer=https://a.example,reason=AUDIENCE_MISMATCH": 1,
		"audience=other,issuer=https://a.example,reason=AUDIENCE_MISMATCH":        1,
	} {
		if verdicts[key] != want {
			t.Errorf("usher_verdicts_total{%s} = %v, want %v (all: %v)", key, verdicts[key], want, verdicts)
		}
	}
	mismatches := counters(t, reg, "usher_audience_mismatches_total")
	if mismatches["actual=api/users,expected=api/invoices"] != 1 || mismatches["actual=other,expected=other"] != 1 || len(mismatches) != 2 {
		t.Errorf("usher_audience_mismatches_total = %v", mismatches)
	}
}
