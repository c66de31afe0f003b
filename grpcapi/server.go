package grpcapi

import (
	"context"
	"log/slog"
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
	v   atomic.Pointer[service.Validator]
	log *slog.Logger
}

// NewServer returns the TokenService implementation over v. A nil log
// discards.
func NewServer(v *service.Validator, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log}
	s.v.Store(v)
	return s
}

// Swap replaces the validator (a configuration reload). Calls in flight
// finish on the one they started with.
func (s *Server) Swap(v *service.Validator) { s.v.Store(v) }

// Current is the validator in service.
func (s *Server) Current() *service.Validator { return s.v.Load() }

// Validate runs the current validator, for other front ends (ext_authz).
func (s *Server) Validate(ctx context.Context, token, audience string, scopes []string) service.Verdict {
	return s.v.Load().Validate(ctx, token, audience, scopes)
}

// Register serves TokenService, grpc.health.v1.Health and server reflection
// on gs. Health answers NOT_SERVING until every issuer's keys were tried
// once, then SERVING; it goes NOT_SERVING when ctx is done.
func Register(ctx context.Context, gs *grpc.Server, v *service.Validator, log *slog.Logger) *Server {
	srv := NewServer(v, log)
	usherv1.RegisterTokenServiceServer(gs, srv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	const svc = "usher.v1.TokenService"
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	go func() {
		if err := v.WaitTried(ctx); err != nil {
			return
		}
		hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
		<-ctx.Done()
		hs.Shutdown()
	}()
	return srv
}

// ValidateToken implements usher.v1.TokenService.
func (s *Server) ValidateToken(ctx context.Context, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	if req.GetExpectedAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "expected_audience is empty: pass the audience your own API answers to (e.g. api/invoices); usher never skips the audience check")
	}
	start := time.Now()
	v := s.v.Load().Validate(ctx, req.GetToken(), req.GetExpectedAudience(), req.GetRequiredScopes())
	level := slog.LevelDebug // rejections are worth an Info line, valid tokens are not
	if !v.Valid() {
		level = slog.LevelInfo
	}
	if s.log.Enabled(ctx, level) {
		attrs := []slog.Attr{
			slog.String("reason", v.Reason.String()),
			slog.String("token", service.TokenID(req.GetToken())),
			slog.String("audience", service.Printable(req.GetExpectedAudience())),
			slog.Duration("took", time.Since(start)),
		}
		if v.Claims != nil {
			attrs = append(attrs, slog.String("issuer", v.Claims.Issuer), slog.String("kid", service.Printable(v.Claims.KeyID)))
		}
		s.log.LogAttrs(ctx, level, "validate", attrs...)
	}
	return verdictProto(&v), nil
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
		})
	}
	return out, nil
}

func verdictProto(v *service.Verdict) *usherv1.ValidateTokenResponse {
	out := &usherv1.ValidateTokenResponse{
		Valid:    v.Valid(),
		Reason:   usherv1.Reason(v.Reason),
		Message:  v.Message,
		Hint:     v.Hint,
		Mismatch: mismatchProto(v.Mismatch),
		Claims:   claimsProto(v.Claims),
	}
	for _, vi := range v.Violations {
		out.Violations = append(out.Violations, &usherv1.Violation{
			Reason:   usherv1.Reason(vi.Reason),
			Message:  vi.Message,
			Mismatch: mismatchProto(vi.Mismatch),
		})
	}
	return out
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
	return service.MemoClaims(c, convertClaims)
}

func convertClaims(c *service.Claims) *usherv1.Claims {
	return &usherv1.Claims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  c.Audience,
		Scopes:    c.Scopes,
		ClientId:  c.ClientID,
		ExpiresAt: timestampOrNil(c.ExpiresAt),
		IssuedAt:  timestampOrNil(c.IssuedAt),
		NotBefore: timestampOrNil(c.NotBefore),
		JwtId:     c.JWTID,
		KeyId:     c.KeyID,
		Algorithm: c.Algorithm,
		TokenType: c.TokenType,
		Raw:       structOrNil(c.Raw),
	}
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
