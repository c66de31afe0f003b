// Package grpcapi serves usher's engine as usher.v1.TokenService over gRPC,
// with grpc.health.v1.Health and server reflection beside it, so that
// grpcurl and ghz work without the .proto:
//
//	v, err := service.NewValidator(ctx, cfg)
//	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(grpcapi.LimitInFlight(1024)),
//		grpc.ChainStreamInterceptor(grpcapi.LimitStreams(1024)))
//	srv := grpcapi.Register(ctx, gs, v, log)
//	// on a configuration reload: srv.Swap(next)
//
// The Server converts the engine's types and nothing else: a rejected token
// is a ValidateTokenResponse, never a gRPC error; an empty expected_audience
// is INVALID_ARGUMENT (usher never skips the audience check), and so are
// sender-constraint fields no client could mean (a scheme other than
// Bearer or DPoP, a dpop_proof above MaxProofBytes, an http_uri above
// MaxURIBytes, a client_certificate_sha256 that is not 43 base64url
// characters). When the engine could not check a DPoP proof for replay
// (service.ErrProofUnchecked: the replay store did not answer) there is no
// verdict: the call is UNAVAILABLE, so that every caller fails closed. Health:
// ServiceName is SERVING (ready) once every issuer's keys were tried and
// while at least one issuer holds keys; "" (alive) once they were tried;
// IssuerHealthName(issuer) while that issuer holds keys. LimitInFlight sheds
// load with RESOURCE_EXHAUSTED beyond a bound instead of queuing, and gives a
// call without a deadline one of MaxCallTime; Intercepted lets another front
// end (HTTP/JSON) share the same limit.
//
// LimitStreams bounds the long-lived streams (health Watch, reflection)
// open at once.
//
// Log lines name a token by service.TokenID, never by its value; requests
// are never logged whole, and of a DPoP proof only the scheme is.
// Rejections are sampled (LogSampler): per reason and SampleWindow, the
// first SampleBurst lines whole, then one line with the count of the rest.
package grpcapi
