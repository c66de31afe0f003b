package console

import (
	"testing"

	"github.com/usher-dev/usher/service"
)

// BenchmarkRecorder_ObserveVerdict is what the console adds to every
// validation when it is on: one verdict event, from every CPU at once.
func BenchmarkRecorder_ObserveVerdict(b *testing.B) {
	r := NewRecorder(nil)
	ev := service.VerdictEvent{Reason: service.ReasonValid, Audience: "api/users"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.ObserveVerdict(ev)
		}
	})
}
