// Package httpapi serves usher.v1.TokenService over HTTP, so that curl and
// stacks without a gRPC library can ask usher for a verdict.
//
// It speaks the Connect protocol (connectrpc.com/connect): a unary call is a
// plain POST to /usher.v1.TokenService/<Method> with Content-Type
// application/json and the request message as protobuf JSON in the body. The
// same handler also answers gRPC and gRPC-Web on the same path, so one
// optional listener serves curl, browsers and gRPC clients alike, and the
// protojson mapping accepts both the JSON names (expectedAudience) and the
// .proto names (expected_audience) of the fields:
//
//	curl -s -H 'Content-Type: application/json' \
//	  -d '{"token":"…","expected_audience":"api/users"}' \
//	  http://127.0.0.1:8080/usher.v1.TokenService/ValidateToken
//
// A DPoP-bound token (RFC 9449) is asked about with the request it came
// with: "scheme":"DPoP", "dpopProof" (the DPoP header), "httpMethod" and
// "httpUri" (without query); a certificate-bound one (RFC 8705) with
// "clientCertificateSha256". When usher cannot check a proof for replay
// (its replay store does not answer) the answer is an error, never a
// verdict: {"code":"unavailable"}, HTTP 503.
//
// The Content-Type header is required: without it curl -d sends a form type
// and the answer is 415. A request message above MaxRequestBytes is refused
// with resource_exhausted (HTTP 429).
//
// A rejected token is a verdict with HTTP 200, exactly as over gRPC:
// {"reason":"REASON_AUDIENCE_MISMATCH","message":…,"hint":…,"mismatch":{…}}.
// Fields at their default value are omitted, as protojson does, so a
// rejection carries no "valid" key: read its absence as false. A call usher
// refuses (an empty expected_audience) is a Connect error: HTTP 400 with
// {"code":"invalid_argument","message":…}; every gRPC status code maps to the
// Connect code of the same name.
//
// Why Connect rather than grpc-gateway: grpc-gateway needs HTTP annotations
// in the .proto, which import google/api/annotations.proto; usher's .proto
// imports nothing but the well-known types Timestamp, Duration and Struct, so
// that every language's stock (and old) code generator still compiles it. Connect needs nothing in the .proto and only one more local,
// pinned protoc plugin (protoc-gen-connect-go, see buf.gen.yaml), whose output
// is proto/usher/v1/usherv1connect. Its JSON is the standard protobuf JSON
// mapping: lowerCamelCase field names in responses, enum values by name,
// timestamps in RFC 3339.
//
// Unknown JSON fields are refused (invalid_argument), where Connect's default
// codec would drop them: a misspelt "required_scope" must not silently turn
// into a call that checks no scope.
//
// Handler adapts any usherv1.TokenServiceServer (in usher, a *grpcapi.Server,
// so that both listeners answer from the same engine) and adds GET /healthz;
// NewServer wraps it in an http.Server with timeouts that speaks HTTP/1.1 and,
// in plaintext, HTTP/2 with prior knowledge (h2c), which gRPC and Connect
// clients use.
//
// This package takes no certificates and authenticates no caller: it returns
// an http.Handler and an http.Server, and TLS is its caller's to add. usher
// serve serves http_listen with the certificates of its tls section, the
// same TLS (client certificates included, when client_ca_file is set) as the
// gRPC listener, and HTTP/2 over it. It refuses a plaintext http_listen off
// loopback unless insecure_plaintext is set (for a mesh sidecar that
// encrypts): tokens sent over plaintext HTTP on a network are readable by
// anyone on the path.
package httpapi
