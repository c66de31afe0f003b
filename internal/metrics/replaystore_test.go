package metrics_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-dev/usher/internal/metrics"
)

// Every call is timed, failed ones too; only failed ones are counted as
// errors.
func TestReplayStore_Observe(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewReplayStore(reg)
	m.Observe(time.Millisecond, nil)
	m.Observe(2*time.Millisecond, nil)
	m.Observe(250*time.Millisecond, errors.New("replay store redis://127.0.0.1:6379/0: SET NX: i/o timeout"))
	if got := counters(t, reg, "usher_dpop_replay_store_errors_total"); got[""] != 1 || len(got) != 1 {
		t.Errorf("usher_dpop_replay_store_errors_total = %v, want 1", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "usher_dpop_replay_store_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 3 || h.GetSampleSum() < 0.252 || h.GetSampleSum() > 0.254 {
			t.Errorf("usher_dpop_replay_store_duration_seconds: %d samples, sum %v; want 3, 0.253", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Error("no usher_dpop_replay_store_duration_seconds")
}
