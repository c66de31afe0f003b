package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-dev/usher/internal/reasons"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// Validator is the engine the server asks; *service.Validator satisfies it.
// The error means no verdict could be given (the DPoP replay store did not
// answer): the request is denied 503.
type Validator interface {
	ValidateRequest(ctx context.Context, r *service.Request) (service.Verdict, error)
}

var _ Validator = (*service.Validator)(nil)

// Reasons of denials that are not a token's verdict. A token's verdict
// uses the service.Reason name (AUDIENCE_MISMATCH, EXPIRED, …).
const (
	// ReasonNoRoute: no route matched and Envoy set no usher_audience context extension.
	ReasonNoRoute = "NO_ROUTE"
	// ReasonAmbiguousPath: servers may read the request path as different
	// paths (dot segments that change the route, an encoded "/" or "\", a
	// backslash, ";" parameters, a double percent-encoding, …), so usher
	// cannot say which API it reaches (400).
	ReasonAmbiguousPath = "AMBIGUOUS_PATH"
	// ReasonMissingCredentials: no authorization header.
	ReasonMissingCredentials = "MISSING_CREDENTIALS"
	// ReasonInvalidCredentials: several authorization values, another scheme, or no usable token.
	ReasonInvalidCredentials = "INVALID_CREDENTIALS"
	// ReasonUnforwardableClaim: the token is valid but a claim cannot be
	// written faithfully into a header (control characters, surrounding
	// white space, a scope with a space), so it is refused rather than altered.
	ReasonUnforwardableClaim = "UNFORWARDABLE_CLAIM"
	// ReasonValidationUnavailable: the engine answered with a reason this
	// server does not know (503, fail closed).
	ReasonValidationUnavailable = "VALIDATION_UNAVAILABLE"
	// ReasonProofUnchecked: the engine could not check a DPoP proof for
	// replay (its replay store did not answer), so it gave no verdict (503,
	// fail closed).
	ReasonProofUnchecked = "PROOF_UNCHECKED"
	// ReasonInvalidClientCertificate: Envoy reported a client certificate
	// (source.certificate) that is not a URL-encoded PEM certificate (401).
	ReasonInvalidClientCertificate = "INVALID_CLIENT_CERTIFICATE"
)

// maxDescription caps error_description in WWW-Authenticate.
const maxDescription = 512

// Server implements envoy.service.auth.v3.Authorization: Envoy's ext_authz
// filter asks it about each request, and it answers with usher's verdict.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	v   Validator
	cfg Config
	log *slog.Logger

	hSubject, hIssuer, hScopes, hClientID, hAudience, hReason string
}

// New returns the Authorization server for v, configured by cfg (validated
// here; New keeps its own copy). A nil log discards.
func New(v Validator, cfg Config, log *slog.Logger) (*Server, error) {
	if v == nil {
		return nil, errors.New("ext_authz: nil Validator")
	}
	cfg.Routes = slices.Clone(cfg.Routes)
	for i := range cfg.Routes {
		cfg.Routes[i].RequiredScopes = slices.Clone(cfg.Routes[i].RequiredScopes)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ext_authz: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := cfg.HeaderPrefix
	return &Server{
		v: v, cfg: cfg, log: log,
		hSubject: p + "subject", hIssuer: p + "issuer", hScopes: p + "scopes",
		hClientID: p + "client-id", hAudience: p + "audience", hReason: p + "reason",
	}, nil
}

// Register registers the Authorization service on gs.
func (s *Server) Register(gs *grpc.Server) { authv3.RegisterAuthorizationServer(gs, s) }

// Check implements envoy.service.auth.v3.Authorization. It never returns a
// gRPC error: every answer, including a denial, is a CheckResponse, so that
// Envoy applies usher's status, headers and body.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	attrs := req.GetAttributes()
	hr := attrs.GetRequest().GetHttp()
	h := readHeaders(hr)
	host, path := hr.GetHost(), hr.GetPath()
	if host == "" {
		host = h.first(":authority")
	}
	if path == "" {
		path = h.first(":path")
	}
	logAttrs := []slog.Attr{
		slog.String("host", service.Printable(host)),
		slog.String("path", service.Printable(pathOnly(path))),
	}
	if id := hr.GetId(); id != "" {
		logAttrs = append(logAttrs, slog.String("request_id", service.Printable(id)))
	}

	t, reason, why := s.cfg.resolve(attrs.GetContextExtensions(), host, path)
	if reason != "" {
		s.logDecision(ctx, slog.LevelWarn, start, reason, logAttrs)
		return s.deny(routeDenial(reason, why)), nil
	}
	logAttrs = append(logAttrs, slog.String("audience", service.Printable(t.audience)))
	realm := s.cfg.Realm
	if realm == "" {
		realm = t.audience
	}

	r, cred, d := readRequest(attrs, h, t, host)
	if cred.dpop() {
		logAttrs = append(logAttrs, slog.String("scheme", cred.scheme)) // never the proof: it carries a key
	}
	if d != nil {
		d.realm, d.dpop = realm, d.dpop || cred.dpop()
		s.logDecision(ctx, slog.LevelInfo, start, d.reason, logAttrs)
		return s.deny(*d), nil
	}
	logAttrs = append(logAttrs, slog.String("token", service.TokenID(r.Token)))

	v, err := s.v.ValidateRequest(ctx, r)
	if err != nil {
		d := uncheckedDenial(realm)
		s.logDecision(ctx, slog.LevelWarn, start, d.reason, append(logAttrs, slog.String("error", cause(err))))
		return s.deny(d), nil
	}
	if v.Claims != nil {
		logAttrs = append(logAttrs, slog.String("issuer", service.Printable(v.Claims.Issuer)), slog.String("kid", service.Printable(v.Claims.KeyID)))
	}
	if !v.Valid() {
		s.logDecision(ctx, slog.LevelInfo, start, v.Reason.String(), logAttrs)
		d := verdictDenial(&v, realm, t.scopes)
		d.dpop = d.dpop || cred.dpop()
		return s.deny(d), nil
	}
	resp, d := s.allow(&v, t, h)
	if d != nil {
		d.realm, d.dpop = realm, cred.dpop()
		s.logDecision(ctx, slog.LevelWarn, start, d.reason, append(logAttrs, slog.String("detail", d.message)))
		return s.deny(*d), nil
	}
	s.logDecision(ctx, slog.LevelDebug, start, service.ReasonValid.String(), logAttrs)
	return resp, nil
}

// readRequest reads what the engine needs from Envoy's report: the
// credential, the DPoP proof and the request it must be made for (method,
// and the URI from the scheme, host and path in normal form), and the
// client certificate's thumbprint. The credential is returned with a
// denial too, once read, so that the challenge follows its scheme.
func readRequest(attrs *authv3.AttributeContext, h headers, t target, host string) (*service.Request, credential, *denial) {
	cred, d := readCredential(h["authorization"], t.audience)
	if d != nil {
		return nil, cred, d
	}
	proof, d := readProof(h["dpop"])
	if d != nil {
		return nil, cred, d
	}
	hr := attrs.GetRequest().GetHttp()
	htu := targetURI(hr.GetScheme(), host, t.path)
	if proof != "" && htu == "" {
		return nil, cred, proofDenial(fmt.Sprintf("usher cannot build the URI the proof must name from Envoy's scheme %q and host %q", service.Printable(hr.GetScheme()), service.Printable(host)))
	}
	x5t, d := certThumbprint(attrs.GetSource().GetCertificate())
	if d != nil {
		return nil, cred, d
	}
	method := hr.GetMethod()
	if method == "" {
		method = h.first(":method")
	}
	return &service.Request{
		Token: cred.token, Audience: t.audience, Scopes: t.scopes,
		Scheme: cred.scheme, DPoPProof: proof, HTTPMethod: method, HTTPURI: htu, ClientCertificateSHA256: x5t,
	}, cred, nil
}

// uncheckedDenial: the engine gave no verdict (503, fail closed). The
// cause (the replay store's error) stays in usher's log.
func uncheckedDenial(realm string) denial {
	return denial{
		code: codes.Unavailable, http: typev3.StatusCode_ServiceUnavailable, reason: ReasonProofUnchecked, realm: realm, dpop: true,
		message: "usher could not check the DPoP proof against its replay store, so it gives no verdict",
		hint: "not the token's or the proof's fault: retry after a backoff with a fresh proof; bearer tokens are unaffected. " +
			"Operator: check that usher's dpop.replay_store (Redis or Valkey) is up and reachable from usher; usher's log has the error",
	}
}

// routeDenial: the request maps to no audience (403 NO_ROUTE) or its path
// to no single one (400 AMBIGUOUS_PATH).
func routeDenial(reason, why string) denial {
	if reason == ReasonAmbiguousPath {
		return denial{
			code: codes.InvalidArgument, http: typev3.StatusCode_BadRequest, reason: reason, message: why,
			hint: "send the path in normal form (no . or .. segments, no encoded / or \\, no ; parameters, no repeated /); " +
				"operator: set normalize_path: true, merge_slashes: true and path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT (or REJECT_REQUEST) " +
				"in Envoy's HTTP connection manager, so that Envoy routes the path usher checks",
		}
	}
	return denial{
		code: codes.PermissionDenied, http: typev3.StatusCode_Forbidden, reason: reason, message: why,
		hint: "map the request to an audience: add a route (host, path_prefix, audience) to usher's ext_authz config, or set " + ContextAudience + " in the Envoy route's typed_per_filter_config check_settings.context_extensions",
	}
}

func (s *Server) logDecision(ctx context.Context, level slog.Level, start time.Time, reason string, attrs []slog.Attr) {
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs = append(attrs, slog.String("reason", reason), slog.Duration("took", time.Since(start)))
	s.log.LogAttrs(ctx, level, "ext_authz check", attrs...)
}

// allow builds the OK response: the claim headers, set with
// OVERWRITE_IF_EXISTS_OR_ADD so that a forged incoming value is replaced,
// and the removal of every other incoming header under the prefix. Envoy
// applies headers before headers_to_remove, so a header usher sets must not
// be listed for removal: that would delete the value usher just set.
func (s *Server) allow(v *service.Verdict, t target, in headers) (*authv3.CheckResponse, *denial) {
	c := v.Claims
	if c == nil {
		c = &service.Claims{}
	}
	for _, sc := range c.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t") || !forwardable(sc) {
			return nil, unforwardable("scope")
		}
	}
	claims := []struct{ name, claim, value string }{
		{s.hSubject, "sub", c.Subject},
		{s.hIssuer, "iss", c.Issuer},
		{s.hScopes, "scope", strings.Join(c.Scopes, " ")},
		{s.hClientID, "client_id", c.ClientID},
		{s.hAudience, "aud", t.audience},
	}
	set := map[string]bool{}
	ok := &authv3.OkHttpResponse{}
	for _, cl := range claims {
		if cl.value == "" {
			continue
		}
		if !forwardable(cl.value) {
			return nil, unforwardable(cl.claim)
		}
		set[cl.name] = true
		ok.Headers = append(ok.Headers, header(cl.name, cl.value))
	}
	for name := range in {
		if strings.HasPrefix(name, s.cfg.HeaderPrefix) && !set[name] {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
		}
	}
	slices.Sort(ok.HeadersToRemove)
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}, nil
}

func unforwardable(claim string) *denial {
	return &denial{
		code: codes.Unauthenticated, http: typev3.StatusCode_Unauthorized, reason: ReasonUnforwardableClaim,
		bearerError: reasons.InvalidToken,
		message:     fmt.Sprintf("claim %s of the token cannot be forwarded in a header: it holds control characters or surrounding white space (or a scope holds a space)", claim),
		hint:        "the token is signed, but its issuer put a value in it that an HTTP header cannot carry unchanged; fix the claim at the issuer",
	}
}

// forwardable: a header value that reaches the upstream unchanged (no
// control characters, no white space HTTP parsers would trim).
func forwardable(v string) bool {
	if strings.TrimSpace(v) != v {
		return false
	}
	return !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// denial is everything a DeniedHttpResponse says.
type denial struct {
	code        codes.Code
	http        typev3.StatusCode
	reason      string
	realm       string // empty: no WWW-Authenticate
	dpop        bool   // a DPoP challenge (RFC 9449 §7.1) rather than Bearer
	bearerError string // RFC 6750 (or RFC 9449) error attribute, if any
	scope       string // RFC 6750 scope attribute (insufficient_scope)
	message     string
	hint        string
}

// verdictDenial maps a verdict through the reason table, as the interceptors
// do: INSUFFICIENT_SCOPE is 403, KEYS_UNAVAILABLE and ISSUER_UNAVAILABLE (or
// a reason this server does not know) 503, INVALID_PROOF 401
// invalid_dpop_proof, every other reason (INACTIVE and PROOF_MISSING
// included) 401 invalid_token; PROOF_MISSING and INVALID_PROOF with a DPoP
// challenge.
func verdictDenial(v *service.Verdict, realm string, required []string) denial {
	r := usherv1.Reason(v.Reason)
	rule := reasons.Deny(r)
	d := denial{
		code: rule.Code, http: typev3.StatusCode(rule.HTTPStatus), reason: reasons.Name(r),
		realm: realm, bearerError: rule.BearerError, message: v.Message, hint: v.Hint,
		dpop: rule.Challenge == reasons.DPoP,
	}
	if rule.BearerError == reasons.InsufficientScope {
		d.scope = strings.Join(required, " ")
	}
	if _, known := reasons.Of(r); !known {
		d.reason = ReasonValidationUnavailable
		d.message = fmt.Sprintf("usher returned reason %d, which this server does not know", int32(v.Reason))
	}
	return d
}

// deny builds the DeniedHttpResponse: status, WWW-Authenticate, the reason
// header and a small JSON body.
func (s *Server) deny(d denial) *authv3.CheckResponse {
	message, hint := d.message, d.hint
	if s.cfg.Terse {
		message, hint = "", ""
	}
	var hs []*corev3.HeaderValueOption
	if d.realm != "" {
		chal := fmt.Sprintf("Bearer realm=%q", quoteSafe(d.realm))
		if d.dpop { // RFC 9449 §7.1, as the interceptors write it
			chal = fmt.Sprintf("%s algs=%q", reasons.DPoP, proofAlgs)
		}
		if d.bearerError != "" {
			chal += fmt.Sprintf(", error=%q", d.bearerError)
			if message != "" {
				chal += fmt.Sprintf(", error_description=%q", truncate(quoteSafe(message), maxDescription))
			}
			if d.scope != "" {
				chal += fmt.Sprintf(", scope=%q", quoteSafe(d.scope))
			}
		}
		hs = append(hs, header("www-authenticate", chal))
	}
	hs = append(hs, header(s.hReason, d.reason), header("content-type", "application/json"))
	body, err := json.Marshal(struct {
		Reason  string `json:"reason"`
		Message string `json:"message,omitempty"`
		Hint    string `json:"hint,omitempty"`
	}{d.reason, message, hint})
	if err != nil { // strings only: cannot happen
		body = []byte(`{"reason":"` + d.reason + `"}`)
	}
	msg := d.reason
	if message != "" {
		msg += ": " + message
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(d.code), Message: msg},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: d.http},
			Headers: hs,
			Body:    string(body),
		}},
	}
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// headers are the request's headers by lower-case name. Envoy sends them
// either merged in a map (multiple values joined with ",") or, with
// encode_raw_headers, one entry per value in header_map.
type headers map[string][]string

func readHeaders(hr *authv3.AttributeContext_HttpRequest) headers {
	h := headers{}
	for k, v := range hr.GetHeaders() {
		k = strings.ToLower(k)
		h[k] = append(h[k], v)
	}
	for _, hv := range hr.GetHeaderMap().GetHeaders() {
		k, v := strings.ToLower(hv.GetKey()), hv.GetValue()
		if raw := hv.GetRawValue(); raw != nil {
			v = string(raw)
		}
		h[k] = append(h[k], v)
	}
	return h
}

func (h headers) first(k string) string {
	if vs := h[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// cause is the engine's error, printable and short: the text after
// ErrProofUnchecked's, which the reason already says.
func cause(err error) string {
	s := err.Error()
	if _, after, ok := strings.Cut(s, service.ErrProofUnchecked.Error()+": "); ok && after != "" {
		s = after
	}
	return service.Printable(s)
}

func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// quoteSafe keeps a header value to printable ASCII without quotes or backslashes.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
