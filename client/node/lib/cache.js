'use strict';
// The verdict cache, with the Go client's rules (client/cache.go):
// - keyed on (SHA-256 of the token, audience, sorted required scopes): the
//   answer depends on all three, and the token itself is never kept;
// - an entry lives at most maxTtlMs, and a valid verdict never past the
//   token's exp;
// - only answers the reason table marks cacheable are kept: never
//   KEYS_UNAVAILABLE, UNKNOWN_KEY, NOT_YET_VALID, PROOF_MISSING, … nor an
//   answer that fails closed, nor a transport error;
// - never the answer for a sender-constrained token (claims with a
//   confirmation): it holds only with its proof. The interceptor does not ask
//   the cache about a call that carries a proof or a client certificate;
// - bounded: least recently used entries go first;
// - concurrent identical misses share one call to usher.

const crypto = require('node:crypto');
const { ruleOf } = require('./reasons');

const DEFAULT_MAX_ENTRIES = 10000;
const DEFAULT_MAX_TTL_MS = 60000;

function makeKey(token, audience, scopes) {
  const hash = crypto.createHash('sha256').update(token, 'utf8').digest('base64');
  const sorted = [...(scopes || [])].sort();
  return [hash, audience, ...sorted].join('\0');
}

function timestampMs(ts) {
  if (!ts) return null;
  const ms = Number(ts.seconds) * 1000 + Math.floor(Number(ts.nanos || 0) / 1e6);
  return Number.isFinite(ms) ? ms : null;
}

class VerdictCache {
  constructor({ maxEntries = DEFAULT_MAX_ENTRIES, maxTtlMs = DEFAULT_MAX_TTL_MS, now = Date.now } = {}) {
    if (!(Number.isInteger(maxEntries) && maxEntries > 0) || !(maxTtlMs > 0)) {
      throw new RangeError('usher verdict cache: maxEntries and maxTtlMs must be positive (cache: false disables it)');
    }
    this.maxEntries = maxEntries;
    this.maxTtlMs = maxTtlMs;
    this.now = now;
    this.entries = new Map(); // insertion order = recency: the first key is the least recently used
    this.flight = new Map();
    this.hits = 0;
    this.misses = 0;
  }

  /** A live cached answer, or undefined. */
  lookup(key) {
    const e = this.entries.get(key);
    if (!e) {
      this.misses += 1;
      return undefined;
    }
    if (!(this.now() < e.expires)) {
      this.entries.delete(key);
      this.misses += 1;
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, e);
    this.hits += 1;
    return e.resp;
  }

  /** Asks usher after a lookup missed; concurrent identical misses share one call. */
  fetch(key, ask) {
    let p = this.flight.get(key);
    if (!p) {
      p = Promise.resolve().then(ask).then((resp) => {
        this.store(key, resp);
        return resp;
      }).finally(() => this.flight.delete(key));
      this.flight.set(key, p);
    }
    return p;
  }

  store(key, resp) {
    const claims = resp && resp.claims;
    if (!ruleOf(resp).cacheable || (claims && claims.confirmation)) return;
    const now = this.now();
    let expires = now + this.maxTtlMs;
    const exp = timestampMs(claims && claims.expiresAt);
    if (resp.valid && exp !== null && exp < expires) expires = exp;
    if (!(expires > now)) return;
    this.entries.delete(key);
    this.entries.set(key, { resp, expires });
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value);
  }

  stats() {
    return { hits: this.hits, misses: this.misses, size: this.entries.size };
  }
}

module.exports = { VerdictCache, makeKey, timestampMs, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TTL_MS };
