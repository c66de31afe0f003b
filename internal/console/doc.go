// Package console is usher's web console, served under /console/ on the
// HTTP/JSON listener (http_listen) when the configuration says
// `console: true`, and always by `usher dev`:
//
//   - the token debugger: paste a token, choose the API it is sent to, and
//     read the verdict (reason, message, hint, expected and actual side by
//     side with the differing characters marked, every violation), the
//     claims and header, and which registered APIs would accept it;
//   - Issuers: what usher believes about each issuer (ListIssuers);
//   - Where tokens go wrong: the audience-mismatch counts as a matrix of
//     expected API × token audience, and verdicts by reason per minute.
//
// Its pages, script and style are embedded in the binary and load nothing
// from any other origin; the page calls usher's own HTTP/JSON API
// (usher.v1.TokenService over Connect, POST with a JSON body, so a token
// never appears in a URL) and the two JSON answers of Handler. Every answer
// carries a strict Content-Security-Policy (ContentSecurityPolicy) and
// Cache-Control: no-store; the page keeps no token in storage or history
// and clears the field when it is left.
//
//	rec := console.NewRecorder(nil)
//	v, _ := service.NewValidator(ctx, cfg, service.WithObserver(rec.Observer(promMetrics)))
//	mux.Handle(console.Prefix, console.Handler(console.Options{APIs: v.Audiences, Recorder: rec}))
//
// The console does NOT authenticate anyone: whoever reaches http_listen
// reaches it, as they reach the API it calls. Off loopback, usher serves
// that listener only over TLS (or with insecure_plaintext, by name).
package console
