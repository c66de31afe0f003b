package grpcapi

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// Server adapts the engine to usher.v1.TokenService: it converts types and
// nothing else. The validator in service can be swapped (a configuration
// reload) while calls are in flight.
type Server struct {
	usherv1.UnimplementedTokenServiceServer
	v       atomic.Pointer[service.Validator]
	swapped chan struct{} // tells the health monitor
	sampler *LogSampler   // bounds the rejection lines
	log     *slog.Logger
	// validateInfo is what ValidateToken's interceptors are told: the same
	// for every call (interceptors read it; grpc's own do not change it).
	validateInfo grpc.UnaryServerInfo
}

// Option configures NewServer and Register.
type Option func(*options)

type options struct {
	now   func() time.Time
	ticks <-chan time.Time
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithClock sets the clock the rejection log's sampling windows are measured
// with (default time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithTicks sets what drives Register's periodic work: re-reading the
// issuers' key sets for health, and writing the log's sampling summaries
// (default a ticker of HealthPoll).
func WithTicks(ticks <-chan time.Time) Option { return func(o *options) { o.ticks = ticks } }

// HealthPoll is how often Register re-reads the issuers' key sets for health.
const HealthPoll = time.Second

// validateMsg is the message of ValidateToken's log line, sampled.
const validateMsg = "validate"

// NewServer returns the TokenService implementation over v. A nil log
// discards. Rejections are logged at Info through a LogSampler: a flood of
// bad tokens writes a bounded number of lines.
func NewServer(v *service.Validator, log *slog.Logger, opts ...Option) *Server {
	o := newOptions(opts)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{swapped: make(chan struct{}, 1), sampler: NewLogSampler(log.Handler(), o.now, validateMsg)}
	s.validateInfo = grpc.UnaryServerInfo{Server: s, FullMethod: usherv1.TokenService_ValidateToken_FullMethodName}
	s.log = slog.New(s.sampler)
	s.v.Store(v)
	return s
}

// Swap replaces the validator (a configuration reload). Calls in flight
// finish on the one they started with; health follows the new one.
func (s *Server) Swap(v *service.Validator) {
	s.v.Store(v)
	select {
	case s.swapped <- struct{}{}:
	default:
	}
}

// FlushLog writes the count of every rejection line not logged one by one,
// the sampling window over or not: call it at shutdown, once calls stopped.
func (s *Server) FlushLog(ctx context.Context) { s.sampler.FlushAll(ctx) }

// Current is the validator in service.
func (s *Server) Current() *service.Validator { return s.v.Load() }

// ValidateRequest runs the current validator, for other front ends
// (ext_authz). The error is the engine's: no verdict (fail closed).
func (s *Server) ValidateRequest(ctx context.Context, r *service.Request) (service.Verdict, error) {
	return s.v.Load().ValidateRequest(ctx, r)
}

// Register serves TokenService, grpc.health.v1.Health and server reflection
// on gs. Health (see ServiceName and IssuerHealthName) follows the issuers'
// key sets and the swapped validator until ctx is done, then answers
// NOT_SERVING.
func Register(ctx context.Context, gs *grpc.Server, v *service.Validator, log *slog.Logger, opts ...Option) *Server {
	o := newOptions(opts)
	srv := NewServer(v, log, opts...)
	gs.RegisterService(tokenServiceDesc(), srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	m := newHealthMonitor(ctx, hs, srv, v)
	m.update()
	ticks := o.ticks
	var stop func()
	if ticks == nil {
		t := time.NewTicker(HealthPoll)
		ticks, stop = t.C, t.Stop
	}
	go func() {
		if stop != nil {
			defer stop()
		}
		m.run(ctx, ticks)
	}()
	return srv
}

// ValidateToken implements usher.v1.TokenService.
func (s *Server) ValidateToken(ctx context.Context, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	resp := new(usherv1.ValidateTokenResponse)
	if _, err := s.validateInto(ctx, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// validateInto is ValidateToken, its response written to resp (a zero
// message); it also returns the response's claims with their encoding (nil
// when it has none), for the wire (see spliced).
func (s *Server) validateInto(ctx context.Context, req *usherv1.ValidateTokenRequest, resp *usherv1.ValidateTokenResponse) (*wireClaims, error) {
	if aud := req.GetExpectedAudience(); strings.TrimSpace(aud) == "" {
		what := "empty"
		switch {
		case len(aud) > 32:
			what = fmt.Sprintf("white space only (%d bytes)", len(aud))
		case aud != "":
			what = fmt.Sprintf("white space only (%q)", aud)
		}
		return nil, status.Error(codes.InvalidArgument, "expected_audience is "+what+": pass the audience your own API answers to (e.g. api/invoices); usher never skips the audience check")
	}
	r, err := engineRequest(req)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	v, err := s.v.Load().ValidateRequest(ctx, &r)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, validateMsg, append(logAttrs("PROOF_UNCHECKED", req, start), slog.String("error", cause(err)))...)
		return nil, unchecked(err)
	}
	level := slog.LevelDebug // rejections are worth an Info line, valid tokens are not
	if !v.Valid() {
		level = slog.LevelInfo
	}
	// The line's attributes are made only if the sampler lets it through.
	s.sampler.logSampled(ctx, level, validateMsg, v.Reason.String(), func() []slog.Attr {
		attrs := logAttrs(v.Reason.String(), req, start)
		if v.Claims != nil {
			attrs = append(attrs, slog.String("issuer", v.Claims.Issuer), slog.String("kid", service.Printable(v.Claims.KeyID)))
		}
		return attrs
	})
	fillVerdict(resp, &v)
	var w *wireClaims
	if v.Claims != nil {
		w = wireClaimsOf(v.Claims)
		resp.Claims = w.msg
	}
	return w, nil
}

// logAttrs identify a call in the log: the token by its TokenID, and of
// the proof only the scheme (a proof carries a key and is a credential for
// the iat window).
func logAttrs(reason string, req *usherv1.ValidateTokenRequest, start time.Time) []slog.Attr {
	attrs := []slog.Attr{
		slog.String("reason", reason),
		slog.String("token", service.TokenID(req.GetToken())),
		slog.String("audience", service.Printable(req.GetExpectedAudience())),
		slog.Duration("took", time.Since(start)),
	}
	if sc := req.GetScheme(); sc != "" {
		attrs = append(attrs, slog.String("scheme", sc)) // checked: Bearer or DPoP in some case
	}
	return attrs
}

// InspectToken implements usher.v1.TokenService.
func (s *Server) InspectToken(ctx context.Context, req *usherv1.InspectTokenRequest) (*usherv1.InspectTokenResponse, error) {
	in := s.v.Load().Inspect(ctx, req.GetToken())
	out := &usherv1.InspectTokenResponse{
		Claims:    claimsProto(in.Claims),
		Signature: usherv1.Reason(in.Signature),
		Message:   in.Message,
		Hint:      in.Hint,
	}
	if in.Header != nil {
		out.Header = structOrNil(in.Header)
	}
	for _, a := range in.Audiences {
		out.Audiences = append(out.Audiences, &usherv1.KnownAudience{Audience: a.Audience, Name: a.Name})
	}
	return out, nil
}

// ListIssuers implements usher.v1.TokenService.
func (s *Server) ListIssuers(context.Context, *usherv1.ListIssuersRequest) (*usherv1.ListIssuersResponse, error) {
	out := &usherv1.ListIssuersResponse{}
	for _, st := range s.v.Load().Issuers() {
		out.Issuers = append(out.Issuers, &usherv1.IssuerStatus{
			Issuer:      st.Issuer,
			JwksUri:     st.JWKSURI,
			KeyIds:      st.KeyIDs,
			Algorithms:  st.Algorithms,
			LastRefresh: timestampOrNil(st.LastRefresh),
			LastError:   st.LastError,
			NextRefresh: timestampOrNil(st.NextRefresh),

			IntrospectionEndpoint:  st.IntrospectionEndpoint,
			IntrospectionLastError: st.IntrospectionError,
		})
	}
	return out, nil
}

// fillVerdict writes v, but its claims, into out, a zero message.
func fillVerdict(out *usherv1.ValidateTokenResponse, v *service.Verdict) {
	out.Valid = v.Valid()
	out.Reason = usherv1.Reason(v.Reason)
	out.Message = v.Message
	out.Hint = v.Hint
	out.Mismatch = mismatchProto(v.Mismatch)
	if len(v.Violations) > 0 {
		out.Violations = make([]*usherv1.Violation, len(v.Violations))
		for i, vi := range v.Violations {
			out.Violations[i] = &usherv1.Violation{
				Reason:   usherv1.Reason(vi.Reason),
				Message:  vi.Message,
				Mismatch: mismatchProto(vi.Mismatch),
			}
		}
	}
}

func mismatchProto(m *service.Mismatch) *usherv1.Mismatch {
	if m == nil {
		return nil
	}
	return &usherv1.Mismatch{Claim: m.Claim, Expected: m.Expected, Actual: m.Actual}
}

// claimsProto converts claims once: claims served again from the verified
// cache reuse their converted form (read-only, safe to marshal concurrently).
func claimsProto(c *service.Claims) *usherv1.Claims {
	if c == nil {
		return nil
	}
	return wireClaimsOf(c).msg
}

func convertClaims(c *service.Claims) *usherv1.Claims {
	return &usherv1.Claims{
		Issuer:       c.Issuer,
		Subject:      c.Subject,
		Audience:     c.Audience,
		Scopes:       c.Scopes,
		ClientId:     c.ClientID,
		ExpiresAt:    timestampOrNil(c.ExpiresAt),
		IssuedAt:     timestampOrNil(c.IssuedAt),
		NotBefore:    timestampOrNil(c.NotBefore),
		JwtId:        c.JWTID,
		KeyId:        c.KeyID,
		Algorithm:    c.Algorithm,
		TokenType:    c.TokenType,
		TokenFormat:  c.TokenFormat,
		Raw:          structOrNil(c.Raw),
		Confirmation: confirmationProto(c.Confirmation),
	}
}

func confirmationProto(c service.Confirmation) *usherv1.Confirmation {
	if !c.Bound() {
		return nil
	}
	return &usherv1.Confirmation{Jkt: c.JKT, X5TS256: c.X5TS256}
}

func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// structOrNil converts decoded JSON; the strict parser only yields types
// structpb accepts, so an error here means nothing to show.
func structOrNil(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil
	}
	return s
}
