package grpcapi

import (
	"context"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// claimsFieldNumber is ValidateTokenResponse.claims (a test checks it
// against the descriptor).
const claimsFieldNumber protowire.Number = 6

// wireClaims are a token's claims in gRPC form, converted once per cached
// token (service.MemoClaims): the message, for the Go API, InspectToken
// and HTTP/JSON, and the same message encoded as ValidateTokenResponse's
// claims field (tag, length, bytes), which the wire reuses instead of
// encoding raw, every payload claim, on every call. Both are read-only.
type wireClaims struct {
	msg   *usherv1.Claims
	field []byte // nil if the message could not be encoded
}

func wireClaimsOf(c *service.Claims) *wireClaims {
	return service.MemoClaims(c, func(c *service.Claims) *wireClaims {
		w := &wireClaims{msg: convertClaims(c)}
		size := proto.Size(w.msg)
		field := make([]byte, 0, protowire.SizeTag(claimsFieldNumber)+protowire.SizeBytes(size))
		field = protowire.AppendTag(field, claimsFieldNumber, protowire.BytesType)
		field = protowire.AppendVarint(field, uint64(size))
		if b, err := (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(field, w.msg); err == nil && len(b) == cap(field) {
			w.field = b
		}
		return w
	})
}

// tokenServiceDesc is usher.v1.TokenService as generated, but for
// ValidateToken's handler: validateTokenHandler.
func tokenServiceDesc() *grpc.ServiceDesc {
	desc := usherv1.TokenService_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i := range desc.Methods {
		if desc.Methods[i].MethodName == "ValidateToken" {
			desc.Methods[i].Handler = validateTokenHandler
		}
	}
	return &desc
}

// validateTokenHandler is the generated handler of ValidateToken, but for
// what it gives gRPC to encode: interceptors see the response as
// ValidateToken returns it, and once they have returned it unchanged, the
// wire gets its spliced form.
func validateTokenHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(usherv1.ValidateTokenRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	c := &validateCall{s: srv.(*Server)}
	if interceptor == nil {
		if _, err := c.handle(ctx, in); err != nil {
			return nil, err
		}
		return c.spliced(), nil
	}
	out, err := interceptor(ctx, in, &c.s.validateInfo, c.handle)
	if err == nil && out == any(&c.resp) {
		return c.spliced(), nil
	}
	return out, err
}

// validateCall is one ValidateToken call through gRPC: its response as
// interceptors see it, and the same for the wire, in one allocation.
type validateCall struct {
	s      *Server
	resp   usherv1.ValidateTokenResponse
	wire   usherv1.ValidateTokenResponse
	claims *wireClaims
}

// handle is the call's grpc.UnaryHandler: it answers into c.resp.
func (c *validateCall) handle(ctx context.Context, req any) (any, error) {
	c.resp.Reset() // an interceptor may call it again
	w, err := c.s.validateInto(ctx, req.(*usherv1.ValidateTokenRequest), &c.resp)
	if err != nil {
		return nil, err
	}
	c.claims = w
	return &c.resp, nil
}

// spliced is the response for the wire: c.resp's fields but claims, and the
// claims' kept encoding (c.claims.field) as unknown fields, when c.resp's
// claims are still c.claims'. Marshalled, it is c.resp's encoding but for
// the order of the fields, which protobuf leaves free: the claims come
// last. c.resp stays as the interceptors saw it.
func (c *validateCall) spliced() *usherv1.ValidateTokenResponse {
	r, w := &c.resp, c.claims
	if w == nil || w.field == nil || r.Claims != w.msg || len(r.ProtoReflect().GetUnknown()) != 0 {
		return r
	}
	c.wire.Valid = r.Valid
	c.wire.Reason = r.Reason
	c.wire.Message = r.Message
	c.wire.Hint = r.Hint
	c.wire.Mismatch = r.Mismatch
	c.wire.Violations = r.Violations
	c.wire.ProtoReflect().SetUnknown(w.field)
	return &c.wire
}
