package devissuer

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"
)

// TestJTISet_BoundedAndFailsClosed: the set holds at most maxDPoPJTIs live
// proofs, refuses a new one when full (rather than forget a live jti), and
// makes room once entries expire.
func TestJTISet_BoundedAndFailsClosed(t *testing.T) {
	var s jtiSet
	now := time.Unix(1_760_000_000, 0)
	key := func(n int) [sha256.Size]byte {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		return sha256.Sum256(b[:])
	}
	for n := range maxDPoPJTIs {
		if fresh, full := s.add(now, key(n), now.Add(time.Minute)); !fresh || full {
			t.Fatalf("entry %d: fresh %v full %v", n, fresh, full)
		}
	}
	if fresh, full := s.add(now, key(0), now.Add(time.Minute)); fresh || full {
		t.Errorf("a seen jti: fresh %v full %v, want a replay", fresh, full)
	}
	if fresh, full := s.add(now, key(-1), now.Add(time.Minute)); fresh || !full {
		t.Errorf("a new jti in a full set: fresh %v full %v, want refused as full", fresh, full)
	}
	later := now.Add(time.Minute)
	if fresh, full := s.add(later, key(-1), later.Add(time.Minute)); !fresh || full {
		t.Errorf("after the entries expired: fresh %v full %v, want room", fresh, full)
	}
	if len(s.seen) != 1 {
		t.Errorf("%d entries after the expired ones were dropped, want 1", len(s.seen))
	}
	if fresh, _ := s.add(later, key(0), later.Add(time.Minute)); !fresh {
		t.Error("an expired jti is still remembered")
	}
}
