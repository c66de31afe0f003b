package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/proto/usher/v1/usherv1connect"
)

const (
	// MaxRequestBytes is the default limit on one request message (after
	// decompression): a token of the default max_token_bytes (16 KiB) with
	// room for a DPoP proof and URI at their limits, the audience and
	// scopes. A larger message is refused with resource_exhausted (HTTP
	// 429) before it is decoded. Pass connect.WithReadMaxBytes to Handler
	// to change it, e.g. to grpcapi.MaxRecvMsgSize(max_token_bytes) when
	// max_token_bytes is raised, as the gRPC listener allows.
	MaxRequestBytes = 64 << 10

	// MaxBodyBytes caps the raw request body whatever the options: nothing
	// past it is read, not even to be discarded. It is above the largest
	// message any valid configuration accepts (max_token_bytes is at most
	// 1 MiB).
	MaxBodyBytes = 2 << 20

	// MaxCallTime bounds a call that arrives without a deadline (Connect's
	// Connect-Timeout-Ms, gRPC's grpc-timeout), so that no internal wait such
	// as a key refetch is unbounded.
	MaxCallTime = 10 * time.Second
)

// Handler serves srv as usher.v1.TokenService over Connect (HTTP/1.1 or
// HTTP/2, JSON or binary protobuf), gRPC and gRPC-Web under
// /usher.v1.TokenService/, and answers GET /healthz with 200 "ok" (liveness
// only: readiness is grpc.health.v1 on the gRPC listener). Every answer says
// Cache-Control: no-store: a verdict carries a token's claims. Request messages
// are limited to MaxRequestBytes and bodies to MaxBodyBytes; JSON requests
// with unknown fields are refused. opts are applied after these defaults, so
// connect.WithReadMaxBytes or connect.WithInterceptors given here take
// effect.
func Handler(srv usherv1.TokenServiceServer, opts ...connect.HandlerOption) http.Handler {
	all := []connect.HandlerOption{
		connect.WithReadMaxBytes(MaxRequestBytes),
		connect.WithCodec(strictJSON{name: "json"}),
		connect.WithCodec(strictJSON{name: "json; charset=utf-8"}),
	}
	all = append(all, opts...)
	path, h := usherv1connect.NewTokenServiceHandler(tokenService{srv: srv}, all...)
	mux := http.NewServeMux()
	mux.Handle(path, noStore(http.MaxBytesHandler(h, MaxBodyBytes)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// noStore tells browsers and proxies to keep no copy of the answer.
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// NewServer returns an http.Server for h on addr (for ListenAndServe, or
// Serve with a listener of your own) that speaks HTTP/1.1 and, in plaintext,
// HTTP/2 with prior knowledge (h2c) as gRPC and Connect clients do; HTTP/2
// over TLS too, should the caller serve TLS. It bounds reading the headers
// (5s), the whole request (10s), the response (MaxCallTime + 10s), idle
// connections (2m), header size (64 KiB) and HTTP/2 streams per connection
// (256). Stop it with Shutdown.
func NewServer(addr string, h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      MaxCallTime + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: 256,
		},
	}
}

// tokenService adapts the gRPC server interface to the generated Connect
// handler interface. It embeds no Unimplemented type on purpose: an RPC added
// to the .proto must be mapped here, or this package stops compiling.
type tokenService struct {
	srv usherv1.TokenServiceServer
}

var _ usherv1connect.TokenServiceHandler = tokenService{}

func (t tokenService) ValidateToken(ctx context.Context, req *connect.Request[usherv1.ValidateTokenRequest]) (*connect.Response[usherv1.ValidateTokenResponse], error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return respond(t.srv.ValidateToken(ctx, req.Msg))
}

func (t tokenService) InspectToken(ctx context.Context, req *connect.Request[usherv1.InspectTokenRequest]) (*connect.Response[usherv1.InspectTokenResponse], error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return respond(t.srv.InspectToken(ctx, req.Msg))
}

func (t tokenService) ListIssuers(ctx context.Context, req *connect.Request[usherv1.ListIssuersRequest]) (*connect.Response[usherv1.ListIssuersResponse], error) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	return respond(t.srv.ListIssuers(ctx, req.Msg))
}

// bounded gives a call without a deadline one of MaxCallTime.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, MaxCallTime)
}

func respond[T any](msg *T, err error) (*connect.Response[T], error) {
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(msg), nil
}

// connectError turns an error of the gRPC implementation into the Connect
// error of the same code, message and details. Connect's codes are gRPC's,
// number for number.
func connectError(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	code := connect.CodeUnknown
	if c := st.Code(); c >= codes.Canceled && c <= codes.Unauthenticated {
		code = connect.Code(c)
	}
	out := connect.NewError(code, errors.New(st.Message()))
	for _, d := range st.Proto().GetDetails() {
		if ed, err := connect.NewErrorDetail(d); err == nil {
			out.AddDetail(ed)
		}
	}
	return out
}

// strictJSON is Connect's protobuf JSON codec except that it refuses
// unknown fields instead of dropping them.
type strictJSON struct{ name string }

func (c strictJSON) Name() string { return c.name }

func (strictJSON) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", v)
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

func (strictJSON) Unmarshal(b []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", v)
	}
	if len(b) == 0 {
		return errors.New("empty body: send a JSON object, {} at least")
	}
	return protojson.UnmarshalOptions{}.Unmarshal(b, m)
}
