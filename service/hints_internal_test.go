package service

import "testing"

// Every kind of malformed token has a hint of its own choosing.
func TestMalformedHints_EveryKind(t *testing.T) {
	for k := malformedShape; k <= malformedExtension; k++ {
		if malformedHints[k] == "" {
			t.Errorf("malformed kind %d has no hint", k)
		}
	}
	if len(malformedHints) != int(malformedExtension)+1 {
		t.Errorf("%d hints for %d kinds", len(malformedHints), malformedExtension+1)
	}
}
