package service

// KeyWaiters is how many calls wait for issuer's key set fetch now.
func KeyWaiters(v *Validator, issuer string) int64 { return v.issuers[issuer].waiting.Load() }

// IntrospectionWaiters is how many calls wait for issuer's introspection
// endpoint now.
func IntrospectionWaiters(v *Validator, issuer string) int64 {
	return v.issuers[issuer].intro.waiting.Load()
}
