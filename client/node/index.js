'use strict';
// usher for Node gRPC services (@grpc/grpc-js >= 1.10). See README.md.
//
//   const { usherInterceptor, claimsOf } = require('@usher-dev/grpc');
//   const server = new grpc.Server({
//     interceptors: [usherInterceptor({ target: '127.0.0.1:50051', audience: 'api/invoices' })],
//   });
//   // in a handler: claimsOf(call).subject

const { Authenticator, usherInterceptor, claimsOf, DEFAULT_SKIP_METHODS, ERROR_DOMAIN } = require('./lib/interceptor');
const { guardRepeatedHeaders } = require('./lib/guard');
const { audienceCredentials, serviceAudiences, clientCredentialsSources, ClientCredentialsSource } = require('./lib/credentials');
const { decodeStatusDetails } = require('./lib/status');
const { RULES, UNKNOWN, DPOP_ALGS } = require('./lib/reasons');
const { TokenService } = require('./lib/usher');

module.exports = {
  usherInterceptor,
  claimsOf,
  Authenticator,
  guardRepeatedHeaders,
  audienceCredentials,
  serviceAudiences,
  clientCredentialsSources,
  ClientCredentialsSource,
  decodeStatusDetails,
  TokenService,
  DEFAULT_SKIP_METHODS,
  ERROR_DOMAIN,
  REASON_RULES: RULES,
  UNKNOWN_REASON_RULE: UNKNOWN,
  DPOP_ALGS,
};
