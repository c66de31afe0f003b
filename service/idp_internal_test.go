package service

import "testing"

// Issuer URLs as each provider writes them, and look-alikes that are not
// that provider.
func TestProviderOfIssuer(t *testing.T) {
	for iss, want := range map[string]provider{
		"https://dev-usher.us.auth0.com/":                                             providerAuth0,
		"https://usher.auth0.com/":                                                    providerAuth0,
		"https://auth0.com.evil.example/":                                             providerUnknown,
		"https://evilauth0.com/":                                                      providerUnknown,
		"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/":               providerEntraV1,
		"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0": providerEntraV2,
		"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/":     providerEntraV1,
		"https://dev-1234567.okta.com/oauth2/default":                                 providerOkta,
		"https://acme.oktapreview.com/oauth2/aus1a2b3c4d5E6f7g8h9":                    providerOkta,
		"https://dev-1234567.okta.com":                                                providerUnknown, // the org authorization server: not for an API's tokens
		"https://sso.example.com/realms/shop":                                         providerKeycloak,
		"https://sso.example.com/auth/realms/shop":                                    providerKeycloak,
		"https://sso.example.com/realms/shop/protocol":                                providerUnknown,
		"https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123":             providerCognito,
		"https://accounts.google.com":                                                 providerGoogle,
		"https://happy-poitras-1a2b.projects.oryapis.com":                             providerHydra,
		"https://auth.example.com/":                                                   providerUnknown,
		"not a URL":                                                                   providerUnknown,
	} {
		if got := providerOfIssuer(iss); got != want {
			t.Errorf("providerOfIssuer(%q) = %d, want %d", iss, got, want)
		}
	}
}

func TestIsGUID(t *testing.T) {
	for s, want := range map[string]bool{
		"6e74172b-be56-4843-9ff4-e66a39bb12e3": true,
		"6E74172B-BE56-4843-9FF4-E66A39BB12E3": true,
		"6e74172b-be56-4843-9ff4-e66a39bb12e":  false,
		"6e74172b_be56-4843-9ff4-e66a39bb12e3": false,
		"6e74172g-be56-4843-9ff4-e66a39bb12e3": false,
		"api://invoices":                       false,
	} {
		if got := isGUID(s); got != want {
			t.Errorf("isGUID(%q) = %v", s, got)
		}
	}
}
