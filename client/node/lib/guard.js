'use strict';
// Node's HTTP/2 layer treats `authorization` as a single-valued header: of a
// request that repeats it, it keeps the first value and silently drops the
// rest before grpc-js builds the call's metadata (and it joins repeated
// `dpop` headers into one "a, b" value). So on its own the interceptor cannot
// see that a request carried two tokens, which the Go interceptor refuses.
//
// guardRepeatedHeaders(server) puts the repeated values back: a listener that
// runs before grpc-js's own on each of the server's HTTP/2 servers reads the
// raw header list and hands every `authorization` and `dpop` value on, so the
// interceptor sees all of them and rejects the call (UNAUTHENTICATED,
// INVALID_CREDENTIALS / INVALID_PROOF). It reaches grpc-js's HTTP/2 servers
// through an internal field; when it cannot find them it throws rather than
// pretend. Call it in bindAsync's callback (the servers exist from then on),
// and again after each further bindAsync.

const GUARDED = new WeakSet();
const KEYS = ['authorization', 'dpop'];

function restoreRepeated(stream, headers, flags, rawHeaders) {
  if (!Array.isArray(rawHeaders) || !headers || typeof headers !== 'object') return;
  const seen = { authorization: [], dpop: [] };
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = String(rawHeaders[i]).toLowerCase();
    if (Object.hasOwn(seen, name)) seen[name].push(String(rawHeaders[i + 1]));
  }
  for (const name of KEYS) {
    if (seen[name].length > 1) headers[name] = seen[name];
  }
}

/** Makes repeated authorization/dpop headers visible to usher's interceptor (see above). Returns server. */
function guardRepeatedHeaders(server) {
  const servers = server && server.http2Servers;
  if (!(servers instanceof Map)) {
    throw new Error('guardRepeatedHeaders: this @grpc/grpc-js Server does not expose its HTTP/2 servers (the internal field http2Servers): '
      + 'repeated authorization headers cannot be detected with this version');
  }
  if (servers.size === 0) {
    throw new Error('guardRepeatedHeaders: the server listens nowhere yet: call it in the callback of server.bindAsync');
  }
  for (const h2 of servers.keys()) {
    if (GUARDED.has(h2)) continue;
    if (!h2 || typeof h2.prependListener !== 'function') {
      throw new Error('guardRepeatedHeaders: an HTTP/2 server of this @grpc/grpc-js Server is not an EventEmitter');
    }
    h2.prependListener('stream', restoreRepeated);
    GUARDED.add(h2);
  }
  return server;
}

module.exports = { guardRepeatedHeaders };
