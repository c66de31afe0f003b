package service

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// Doorkeeper sizing: bits per sighting remembered and probes per token
// (about 2.4 % false positives when a generation is full).
const (
	doorBitsPerItem = 8
	doorProbes      = 4
)

// doorkeeper remembers which token hashes were sighted recently, so that
// the verified-token cache admits a token to its main part only on its
// second sighting (TinyLFU's doorkeeper, as in ristretto and Caffeine). It
// is a Bloom filter in two generations: sightings go into the current one;
// once it holds perGen of them it becomes the previous one and a cleared
// filter the current one, so a sighting is remembered for between perGen
// and 2·perGen later sightings, in a fixed 2·perGen bytes. A false
// positive admits a one-off token, which costs a cache entry, nothing
// more. It holds hashes only, and is not safe for concurrent use: the
// cache calls it under its lock.
type doorkeeper struct {
	cur, prev []uint64
	nbits     uint64 // bits per generation
	perGen    int    // sightings a generation takes before it rotates
	added     int    // sightings in cur
}

// newDoorkeeper remembers at least perGen sightings.
func newDoorkeeper(perGen int) *doorkeeper {
	perGen = max(perGen, 64)
	words := (perGen*doorBitsPerItem + 63) / 64
	return &doorkeeper{cur: make([]uint64, words), prev: make([]uint64, words), nbits: uint64(64 * words), perGen: perGen}
}

// bytes is the doorkeeper's fixed memory.
func (d *doorkeeper) bytes() int64 { return int64(16 * len(d.cur)) }

// sighted records a sighting of key and reports whether key was sighted
// before (in either generation).
func (d *doorkeeper) sighted(key [sha256.Size]byte) bool {
	// The key is a SHA-256: its words are already uniform, independent
	// hashes (double hashing, Kirsch and Mitzenmacher).
	h1, h2 := binary.LittleEndian.Uint64(key[0:]), binary.LittleEndian.Uint64(key[8:])|1
	inCur, inPrev := true, true
	for i := range uint64(doorProbes) {
		bit, _ := bits.Mul64(h1+i*h2, d.nbits) // in [0, nbits), without a division
		w, m := bit/64, uint64(1)<<(bit%64)
		inCur = inCur && d.cur[w]&m != 0
		inPrev = inPrev && d.prev[w]&m != 0
		d.cur[w] |= m
	}
	if inCur {
		return true
	}
	if d.added++; d.added >= d.perGen {
		d.cur, d.prev = d.prev, d.cur
		clear(d.cur)
		d.added = 0
	}
	return inPrev
}
