'use strict';
// The usher.v1.TokenService stub, loaded at run time with @grpc/proto-loader
// from ../proto/usher/v1/usher.proto (a copy of the repository's proto that
// test/sources.test.js holds equal to it).

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.join(__dirname, '..', 'proto');
const PROTO_FILE = 'usher/v1/usher.proto';

// Spread calls over every resolved usher address and retry UNAVAILABLE (all of
// TokenService's RPCs are idempotent reads), as the Go client's Dial does.
const SERVICE_CONFIG = JSON.stringify({
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [{
    name: [{ service: 'usher.v1.TokenService' }],
    retryPolicy: {
      maxAttempts: 4,
      initialBackoff: '0.05s',
      maxBackoff: '0.5s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

let tokenService;
/** The usher.v1.TokenService client constructor (grpc.loadPackageDefinition). */
function TokenService() {
  if (!tokenService) {
    const def = protoLoader.loadSync(PROTO_FILE, {
      includeDirs: [PROTO_DIR],
      keepCase: false, // expected_audience -> expectedAudience
      longs: String,
      enums: String, // 'REASON_AUDIENCE_MISMATCH'; a number for a reason this copy does not know
      defaults: true,
      oneofs: true,
    });
    tokenService = grpc.loadPackageDefinition(def).usher.v1.TokenService;
  }
  return tokenService;
}

/** A TokenService client for target with the defaults above (channelOptions override them). */
function connect(target, credentials, channelOptions) {
  const Ctor = TokenService();
  return new Ctor(target, credentials || grpc.credentials.createInsecure(), {
    'grpc.service_config': SERVICE_CONFIG,
    'grpc.keepalive_time_ms': 30000,
    'grpc.keepalive_timeout_ms': 10000,
    ...(channelOptions || {}),
  });
}

module.exports = { TokenService, connect, PROTO_DIR, PROTO_FILE };
