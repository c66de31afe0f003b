package grpcapi_test

import (
	"testing"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// TestEngineReasonsAreTheProtos keeps the engine's Reason, which cannot
// import the generated package, in step with usher.v1.Reason: the adapter
// converts one to the other by number, so numbers and names must agree both
// ways.
func TestEngineReasonsAreTheProtos(t *testing.T) {
	for n, name := range usherv1.Reason_name {
		if got := service.Reason(n).String(); "REASON_"+got != name {
			t.Errorf("usher.v1 reason %d is %s, the engine's is %s: add it to service/verdict.go", n, name, got)
		}
	}
	for r := service.Reason(1); r < 256; r++ {
		if name := r.String(); name != "UNSPECIFIED" {
			if _, ok := usherv1.Reason_name[int32(r)]; !ok {
				t.Errorf("the engine has reason %d (%s), which usher.proto lacks", r, name)
			}
		}
	}
}
