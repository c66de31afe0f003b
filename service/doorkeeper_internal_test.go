package service

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

func sightingKey(i int) [sha256.Size]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return sha256.Sum256(b[:])
}

// The doorkeeper answers "sighted before" for every key of its current
// and previous generations, rarely for a key it never saw, and forgets a
// key two generations on; its memory is fixed at about two bytes per
// sighting a generation takes.
func TestDoorkeeper(t *testing.T) {
	const perGen = 10_000
	d := newDoorkeeper(perGen)
	if got, want := d.bytes(), int64(2*perGen*doorBitsPerItem/8); got < want || got > want+16 {
		t.Fatalf("%d bytes for %d sightings a generation, want %d", got, perGen, want)
	}
	for i := range perGen - 1 {
		d.sighted(sightingKey(i)) // a false positive here is possible, and counted below
	}
	for i := range perGen - 1 {
		if !d.sighted(sightingKey(i)) {
			t.Fatalf("key %d: sighted once already, reported new", i)
		}
	}
	fp := 0
	for i := range perGen {
		if d.sighted(sightingKey(perGen + i)) { // new keys: the first of them rotates the generations
			fp++
		}
	}
	if fp > perGen/20 {
		t.Errorf("%d of %d new keys reported sighted: more than 5 %% false positives", fp, perGen)
	}
	if !d.sighted(sightingKey(0)) {
		t.Error("a key of the previous generation was forgotten")
	}
	for i := range 2 * perGen {
		d.sighted(sightingKey(3*perGen + i))
	}
	if d.sighted(sightingKey(1)) && d.sighted(sightingKey(2)) && d.sighted(sightingKey(5)) {
		t.Error("keys two generations old are still remembered")
	}
}

// The cache keeps the doorkeeper within its byte bound, and a cache no
// larger than its window has none.
func TestVerifiedCache_Bounds(t *testing.T) {
	c := newVerifiedCache(10_000, 64<<20)
	if c.door == nil || c.window.max != 100 || c.main.max != 9_900 {
		t.Fatalf("a 10,000-entry cache: window %d, main %d, doorkeeper %v", c.window.max, c.main.max, c.door != nil)
	}
	if c.maxBytes+c.door.bytes() != 64<<20 || c.door.bytes() > 16*10_000+16 {
		t.Errorf("doorkeeper %d bytes, entries %d: want the 64 MiB between them, 16 bytes an entry", c.door.bytes(), c.maxBytes)
	}
	// cache_max_entries far above what cache_max_bytes holds: sized by bytes.
	c = newVerifiedCache(1<<30, 4<<20)
	if n := c.window.max + c.main.max; n != int(4<<20/entrySize(0)) || c.door.bytes() > 16*int64(n)+16 {
		t.Errorf("a 4 MiB cache of 2^30 entries: %d entries, doorkeeper %d bytes", n, c.door.bytes())
	}
	c = newVerifiedCache(3, 1<<20)
	if c.door != nil || c.main.lru != nil || c.window.max != 3 {
		t.Errorf("a 3-entry cache: window %d, main %v, doorkeeper %v", c.window.max, c.main.lru != nil, c.door != nil)
	}
}
