'use strict';
// What each usher.v1.Reason means to the caller of a protected API: read from
// ../reasons.json, a copy of the repository's examples/reasons.json (the JSON
// form of internal/reasons, the one table the Go interceptor also uses).
// test/sources.test.js fails when the copy differs from its source.
//
// A reason the table does not know (a newer usher's), UNSPECIFIED, and a
// verdict that contradicts itself (valid with another reason, not valid with
// REASON_VALID) get the table's "unknown" rule: UNAVAILABLE, fail closed.

const grpc = require('@grpc/grpc-js');
const table = require('../reasons.json');

function toRule(entry, what) {
  const code = grpc.status[entry.grpc_code];
  if (typeof code !== 'number') {
    throw new Error(`usher reasons.json: ${what} has grpc_code ${JSON.stringify(entry.grpc_code)}, which @grpc/grpc-js does not know`);
  }
  return Object.freeze({
    code,
    grpcCode: entry.grpc_code,
    httpStatus: entry.http_status,
    bearerError: entry.bearer_error,
    cacheable: entry.cacheable,
    retryable: entry.retryable,
    challenge: entry.challenge,
  });
}

/** reason name (REASON_…) -> rule */
const RULES = Object.freeze(Object.fromEntries(table.reasons.map((r) => [r.reason, toRule(r, r.reason)])));
/** the rule of a reason the table does not know: UNAVAILABLE */
const UNKNOWN = toRule(table.unknown, 'unknown');
/** the proof algorithms usher accepts, announced in a DPoP challenge (RFC 9449 §7.1) */
const DPOP_ALGS = table.dpop_algs;

const INVALID_TOKEN = 'invalid_token';
const INSUFFICIENT_SCOPE = 'insufficient_scope';
const INVALID_DPOP_PROOF = 'invalid_dpop_proof';
const DPOP = 'DPoP';

/** The rule of a rejection: the reason's own, or UNKNOWN (fail closed) for VALID, UNSPECIFIED and unknown reasons. */
function deny(name) {
  const rule = Object.hasOwn(RULES, name) ? RULES[name] : null;
  return rule && rule.code !== grpc.status.OK ? rule : UNKNOWN;
}

/** The rule of usher's answer: OK only for valid with REASON_VALID. */
function ruleOf(resp) {
  const valid = resp.valid === true;
  const name = reasonName(resp.reason);
  if (valid !== (name === 'REASON_VALID')) return UNKNOWN;
  return valid ? RULES.REASON_VALID : deny(name);
}

/** "REASON_AUDIENCE_MISMATCH" for a known reason; "REASON_999" for a number proto-loader could not name. */
function reasonName(reason) {
  return typeof reason === 'string' ? reason : `REASON_${Number(reason)}`;
}

/** The name without its prefix, as the Go interceptor's ErrorInfo.reason: "AUDIENCE_MISMATCH". */
function shortName(reason) {
  return typeof reason === 'string' ? reason.replace(/^REASON_/, '') : `REASON_${Number(reason)}`;
}

module.exports = {
  RULES, UNKNOWN, DPOP_ALGS, INVALID_TOKEN, INSUFFICIENT_SCOPE, INVALID_DPOP_PROOF, DPOP,
  deny, ruleOf, reasonName, shortName,
};
