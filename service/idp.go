package service

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Identity providers: which product an issuer is, told from its issuer URL
// or, when the URL does not say (a custom domain, a self-hosted server), from
// the discovery document usher fetched anyway. It only chooses how
// AUDIENCE_MISMATCH's hint names the fix: how to request a token for an API
// differs from one provider to the next. Nothing is fetched for it, and a
// provider usher does not recognise gets the standard advice (the "audience"
// parameter, or RFC 8707's "resource").

// provider is an issuer's identity provider as far as usher can tell.
type provider uint32

const (
	providerUnknown provider = iota
	providerAuth0
	providerEntraV1 // https://sts.windows.net/{tenant}/: v1.0 access tokens
	providerEntraV2 // https://login.microsoftonline.com/{tenant}/v2.0: v2.0 access tokens
	providerOkta    // a custom authorization server, https://{org}.okta.com/oauth2/{id}
	providerKeycloak
	providerCognito
	providerGoogle
	providerHydra // Ory Hydra, self-hosted or Ory Network
)

// keycloakPath is a Keycloak realm's issuer path (/realms/{realm}, or
// /auth/realms/{realm} before Keycloak 17).
var keycloakPath = regexp.MustCompile(`^(/auth)?/realms/[^/]+/?$`)

// entraV1Hosts issue v1.0 access tokens (iss https://sts.windows.net/{tenant}/);
// entraHosts are the Microsoft identity platform's authorities.
var (
	entraV1Hosts = []string{"sts.windows.net", "sts.chinacloudapi.cn"}
	entraHosts   = []string{"login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn"}
)

// providerOfIssuer recognises a provider by its issuer URL alone.
func providerOfIssuer(issuer string) provider {
	if issuer == "accounts.google.com" { // Google Sign-In's ID tokens may name it without a scheme
		return providerGoogle
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return providerUnknown
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case hasDomain(host, "auth0.com"):
		return providerAuth0
	case slices.Contains(entraV1Hosts, host):
		return providerEntraV1
	case slices.Contains(entraHosts, host):
		if strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), "/v2.0") {
			return providerEntraV2
		}
		return providerEntraV1
	case (hasDomain(host, "okta.com") || hasDomain(host, "oktapreview.com") || hasDomain(host, "okta-emea.com")) && strings.HasPrefix(u.Path, "/oauth2/"):
		return providerOkta
	case strings.HasPrefix(host, "cognito-idp.") && strings.HasSuffix(host, ".amazonaws.com"):
		return providerCognito
	case host == "accounts.google.com":
		return providerGoogle
	case hasDomain(host, "oryapis.com"):
		return providerHydra
	case keycloakPath.MatchString(u.Path):
		return providerKeycloak
	}
	return providerUnknown
}

// hasDomain reports whether host is domain or one of its subdomains.
func hasDomain(host, domain string) bool {
	return host == domain || strings.HasSuffix(host, "."+domain)
}

// providerOfDiscovery recognises a provider by what only it writes in its
// discovery document: an issuer on a custom domain or a self-hosted server.
func providerOfDiscovery(d discoveryDoc) provider {
	if p := providerOfIssuer(d.Issuer); p != providerUnknown {
		return p
	}
	tokenPath, tokenHost := urlParts(d.TokenEndpoint)
	logoutPath, _ := urlParts(d.EndSessionEndpoint)
	switch {
	case d.MFAChallengeEndpoint != "" && strings.HasSuffix(tokenPath, "/oauth/token"):
		return providerAuth0
	case d.CloudInstanceName != "":
		if strings.HasSuffix(strings.TrimSuffix(d.Issuer, "/"), "/v2.0") {
			return providerEntraV2
		}
		return providerEntraV1
	case slices.Contains(d.ResponseModesSupported, "okta_post_message"):
		return providerOkta
	case strings.HasSuffix(tokenPath, "/protocol/openid-connect/token"):
		return providerKeycloak
	case hasDomain(tokenHost, "amazoncognito.com"):
		return providerCognito
	case strings.HasSuffix(logoutPath, "/oauth2/sessions/logout") || d.HydraCredentialsEndpoint != "":
		return providerHydra
	}
	return providerUnknown
}

// urlParts is the path and the lower-case host name of a URL ("" when it
// is not one).
func urlParts(raw string) (path, host string) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", ""
	}
	return u.Path, strings.ToLower(u.Hostname())
}

// provider is the issuer's identity provider: from its URL, or from its
// discovery document once fetched.
func (ik *issuerKeys) provider() provider { return provider(ik.idp.Load()) }

// learnProvider takes the provider a discovery document shows when the
// issuer URL did not tell.
func (ik *issuerKeys) learnProvider(d discoveryDoc) {
	if ik.provider() == providerUnknown {
		ik.idp.CompareAndSwap(uint32(providerUnknown), uint32(providerOfDiscovery(d)))
	}
}
