// Package interop tests usher against a real identity provider:
// node-oidc-provider (a certified OpenID Provider, pinned in
// interop/oidc-provider/package-lock.json), started by the tests on
// 127.0.0.1, and usher itself as the built binary (`usher serve`) on a real
// gRPC listener on 127.0.0.1.
//
// The tests skip, saying so, when node or the provider's node_modules are
// missing; .ci/interop installs both and sets USHER_INTEROP=1, which turns
// that skip into a failure. USHER_BIN names a built usher to use instead of
// building one.
//
// The package holds tests only.
package interop
