package service

import (
	"fmt"
	"slices"
	"strings"
)

// How to get a token for an API, said the way the token's identity provider
// (idp.go) asks for it. Built only for an AUDIENCE_MISMATCH verdict: a valid
// token never reaches this file.

// audienceFix names how to get a token for expected from ik's provider.
// expected is already bounded and escaped (Printable).
func audienceFix(ik *issuerKeys, t *parsedToken, auds []string, expected string) string {
	switch ik.provider() {
	case providerAuth0:
		return fmt.Sprintf("request the token with audience=%s (Auth0: the audience parameter of /authorize or /oauth/token; %s must be the Identifier of an API registered in the tenant, under Applications > APIs)", expected, expected)
	case providerEntraV1, providerEntraV2:
		return entraFix(ik.provider(), auds, expected)
	case providerOkta:
		return fmt.Sprintf("get the token from the Okta authorization server whose audience is %s (Security > API > Authorization Servers > Audience): a custom authorization server writes its one configured audience into every access token, whatever the request asks, so a token for another API comes from another authorization server, whose issuer usher must trust as well", expected)
	case providerKeycloak:
		return keycloakFix(t, auds, expected)
	case providerCognito:
		return cognitoFix(ik, expected)
	case providerGoogle:
		return fmt.Sprintf("request the Google-signed ID token with audience %s (the metadata server's /computeMetadata/v1/instance/service-accounts/default/identity?audience=%s, or IAM Credentials generateIdToken with that audience); Google's OAuth access tokens are opaque and cannot be validated outside Google", expected, expected)
	case providerHydra:
		return fmt.Sprintf("request the token with audience=%s (Ory Hydra: the audience parameter of the authorization or token request, several separated by spaces), and allow it for the client: the client's audience list must contain %s", expected, expected)
	}
	return fmt.Sprintf("ask the issuer for a token with audience %s (OAuth 2.0 \"audience\" or RFC 8707 \"resource\" parameter)", expected)
}

// entraFix: the scope that asks Microsoft Entra ID for a token for an
// API, and the form of aud its tokens carry: v2.0 tokens always the API's
// application (client) id, v1.0 tokens the resource as the client named it
// (App ID URI or application id).
func entraFix(p provider, auds []string, expected string) string {
	fix := fmt.Sprintf("request the token with scope=%s/.default (client credentials; for a signed-in user, scope=%s/<scope name>) from the Microsoft identity platform", expected, expected)
	if p == providerEntraV2 {
		fix += "; this issuer's tokens are v2.0, whose aud is always the API's application (client) id, a GUID, never its App ID URI"
		if !isGUID(expected) {
			fix += fmt.Sprintf(": configure the service to expect the application id of the API whose App ID URI is %s, or set accessTokenAcceptedVersion to 1 (or null) in that API's app manifest to get v1.0 tokens, which carry the App ID URI the client asked for", expected)
		}
		return fix
	}
	fix += "; this issuer's tokens are v1.0, whose aud is the API as the client named it: its App ID URI (api://…) or its application (client) id, a GUID"
	if isGUID(expected) != slices.ContainsFunc(auds, isGUID) {
		fix += fmt.Sprintf(": request it in the form the service expects (%s), or set accessTokenAcceptedVersion to 2 in the API's app manifest to get v2.0 tokens (issuer https://login.microsoftonline.com/{tenant}/v2.0), whose aud is always the application id", expected)
	}
	return fix
}

// isGUID reports whether s is a GUID (8-4-4-4-12 hexadecimal digits), as
// Entra's application ids are.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// keycloakFix: Keycloak puts an API in aud only through an audience mapper
// on the requesting client (azp) or on a client scope it requests.
func keycloakFix(t *parsedToken, auds []string, expected string) string {
	client := "<the client>"
	if t.claims.azp != "" {
		client = Printable(t.claims.azp)
	}
	fix := fmt.Sprintf("add an audience mapper for %s in Keycloak: Clients > %s > Client scopes > %s-dedicated > Add mapper > By configuration > Audience, with Included Client Audience the API's client %s (or Included Custom Audience %s); or put that mapper in a client scope the client requests (scope=…). Keycloak writes an API into aud only through such a mapper", expected, client, client, expected, expected)
	if len(auds) == 1 && auds[0] == "account" {
		fix = "aud \"account\" is Keycloak's own account console, there by the default roles, not an API; " + fix
	}
	return fix
}

// cognitoFix: Cognito access tokens carry no aud unless the client asked
// for a resource (RFC 8707); the API is otherwise named by its resource
// server's scopes, and the app client by client_id.
func cognitoFix(ik *issuerKeys, expected string) string {
	if slices.Contains(ik.cfg.AudienceClaims, "client_id") {
		return fmt.Sprintf("Cognito access tokens name the app client they were issued to (client_id), not an API, and this issuer's audience is read from %s (audience_claims): get the token with the app client %s; to tell APIs apart, give each API a resource server and request its scopes (scope=<resource server identifier>/<scope>), checked with required_scopes",
			strings.Join(ik.cfg.AudienceClaims, ", "), expected)
	}
	return fmt.Sprintf("request the token with resource=%s (RFC 8707: Cognito accepts it with managed login on the Essentials or Plus plan, and writes it into aud); otherwise Cognito access tokens carry no aud: request the resource server's scopes (scope=%s/<scope>) and check them with required_scopes, and read the audience from the app client with audience_claims: [client_id]", expected, expected)
}
