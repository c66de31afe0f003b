package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReplayStore are the metrics of the shared DPoP replay store
// (dpop.replay_store): made once per process, they outlive the stores a
// reload replaces.
type ReplayStore struct {
	errors   prometheus.Counter
	duration prometheus.Histogram
}

// NewReplayStore registers on reg:
//
//	usher_dpop_replay_store_errors_total        calls the store did not answer (the proof was refused: UNAVAILABLE)
//	usher_dpop_replay_store_duration_seconds    time of each call, errors included
func NewReplayStore(reg prometheus.Registerer) *ReplayStore {
	m := &ReplayStore{
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usher_dpop_replay_store_errors_total",
			Help: "Calls to the shared DPoP replay store (dpop.replay_store) that failed or timed out; each left a DPoP-bound token without a verdict (gRPC UNAVAILABLE, HTTP 503).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "usher_dpop_replay_store_duration_seconds",
			Help:    "Time of one call to the shared DPoP replay store, failed calls included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
		}),
	}
	reg.MustRegister(m.errors, m.duration)
	return m
}

// Observe records one call: how long it took and whether it failed. Its
// signature is replaystore.WithObserver's.
func (m *ReplayStore) Observe(took time.Duration, err error) {
	m.duration.Observe(took.Seconds())
	if err != nil {
		m.errors.Inc()
	}
}
