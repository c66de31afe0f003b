package grpcapi

import "google.golang.org/grpc"

// TokenServiceDesc is the service Register registers, for benchmarks.
func TokenServiceDesc() *grpc.ServiceDesc { return tokenServiceDesc() }
