// Package metrics is usher's Prometheus side: it observes the engine's
// verdicts (a service.Observer) and exports, at scrape time, what a running
// usher holds (the verified-token cache, each issuer's key set). Everything
// is registered on a registry the caller owns; label values come from
// bounded sets (configured issuers, registered audiences, "other").
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/usher-dev/usher/service"
)

// otherLabel stands for every value outside a bounded set (an unregistered
// audience, an untrusted issuer), so that label cardinality stays bounded.
const otherLabel = "other"

// Metrics are usher's verdict metrics. Make them once per process with New
// and pass them to each Validator with service.WithObserver: the validators a
// reload creates share them.
type Metrics struct {
	verdicts   *prometheus.CounterVec
	latency    prometheus.Histogram
	mismatches *prometheus.CounterVec

	introCalls   *prometheus.CounterVec
	introLatency *prometheus.HistogramVec
	introHits    *prometheus.CounterVec
	introMisses  *prometheus.CounterVec
	introShed    *prometheus.CounterVec
}

// New registers usher's verdict metrics on reg:
//
//	usher_verdicts_total{reason, issuer, audience}
//	usher_validation_seconds
//	usher_audience_mismatches_total{expected, actual}   "top audience mismatches"
//	usher_introspection_calls_total{issuer, outcome}   opaque tokens: calls to introspection endpoints
//	usher_introspection_seconds{issuer}
//	usher_introspection_cache_hits_total{issuer}
//	usher_introspection_cache_misses_total{issuer}
//	usher_introspection_shed_total{issuer}              misses turned away at once (too many waiting)
//
// issuer is a configured issuer or "other"; audiences are registered
// audiences or "other"; outcome is one of service's IntrospectionOutcome
// values (active, inactive, unreachable, timeout, server_error,
// unauthorized, bad_request, unusable).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "usher_verdicts_total",
			Help: "Validations by verdict reason, configured issuer and registered expected audience (others as \"other\").",
		}, []string{"reason", "issuer", "audience"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "usher_validation_seconds",
			Help:    "Time to validate one token in the engine (cache hits included).",
			Buckets: []float64{.00001, .00005, .0001, .00025, .0005, .001, .0025, .01, .05, .25, 1},
		}),
		mismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "usher_audience_mismatches_total",
			Help: "AUDIENCE_MISMATCH verdicts by expected audience and the token's audience, both registered audiences or \"other\": which API's tokens are sent where.",
		}, []string{"expected", "actual"}),
	}
	m.newIntrospection()
	reg.MustRegister(m.verdicts, m.latency, m.mismatches, m.introCalls, m.introLatency, m.introHits, m.introMisses, m.introShed)
	return m
}

func (m *Metrics) newIntrospection() {
	m.introCalls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_introspection_calls_total",
		Help: "Calls to issuers' introspection endpoints (opaque tokens, RFC 7662) by configured issuer and outcome.",
	}, []string{"issuer", "outcome"})
	m.introLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "usher_introspection_seconds",
		Help:    "Time of one call to an issuer's introspection endpoint, by configured issuer.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"issuer"})
	m.introHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_introspection_cache_hits_total",
		Help: "Opaque tokens answered from the introspection cache, by configured issuer.",
	}, []string{"issuer"})
	m.introMisses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_introspection_cache_misses_total",
		Help: "Opaque tokens not in the introspection cache (a call of their own, a shared call, or turned away), by configured issuer.",
	}, []string{"issuer"})
	m.introShed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "usher_introspection_shed_total",
		Help: "Opaque tokens answered ISSUER_UNAVAILABLE at once because too many calls already wait for the issuer's introspection endpoint.",
	}, []string{"issuer"})
}

var (
	_ service.Observer              = (*Metrics)(nil)
	_ service.IntrospectionObserver = (*Metrics)(nil)
)

// ObserveIntrospection implements service.IntrospectionObserver.
func (m *Metrics) ObserveIntrospection(ev service.IntrospectionEvent) {
	iss := orOther(ev.Issuer)
	m.introCalls.WithLabelValues(iss, string(ev.Outcome)).Inc()
	m.introLatency.WithLabelValues(iss).Observe(ev.Took.Seconds())
}

// ObserveIntrospectionLookup implements service.IntrospectionObserver.
func (m *Metrics) ObserveIntrospectionLookup(ev service.IntrospectionLookup) {
	iss := orOther(ev.Issuer)
	if ev.Hit {
		m.introHits.WithLabelValues(iss).Inc()
		return
	}
	m.introMisses.WithLabelValues(iss).Inc()
	if ev.Shed {
		m.introShed.WithLabelValues(iss).Inc()
	}
}

// ObserveVerdict implements service.Observer.
func (m *Metrics) ObserveVerdict(ev service.VerdictEvent) {
	aud := orOther(ev.Audience)
	m.verdicts.WithLabelValues(ev.Reason.String(), orOther(ev.Issuer), aud).Inc()
	m.latency.Observe(ev.Took.Seconds())
	if ev.Reason == service.ReasonAudienceMismatch {
		m.mismatches.WithLabelValues(aud, orOther(ev.TokenAudience)).Inc()
	}
}

// orOther stands "other" for a value outside the bounded set, which the
// engine hands over as "".
func orOther(v string) string {
	if v == "" {
		return otherLabel
	}
	return v
}

// StatusCollector exports what a running usher holds, read at scrape time:
// the verified-token cache's counters and each issuer's key set. current
// returns the validator in service (it changes on reload).
func StatusCollector(current func() *service.Validator) prometheus.Collector {
	return statusCollector{current: current}
}

type statusCollector struct{ current func() *service.Validator }

var (
	descCacheHits      = prometheus.NewDesc("usher_cache_hits_total", "Verified-token cache hits.", nil, nil)
	descCacheMisses    = prometheus.NewDesc("usher_cache_misses_total", "Verified-token cache misses.", nil, nil)
	descCacheEvictions = prometheus.NewDesc("usher_cache_evictions_total", "Verified-token cache evictions (bound reached).", nil, nil)
	descCacheEntries   = prometheus.NewDesc("usher_cache_entries", "Verified-token cache entries.", nil, nil)
	descCacheBytes     = prometheus.NewDesc("usher_cache_bytes", "Verified-token cache size, approximate bytes.", nil, nil)
	descFetches        = prometheus.NewDesc("usher_jwks_fetches_total", "Good key set fetches.", []string{"issuer"}, nil)
	descFailures       = prometheus.NewDesc("usher_jwks_fetch_failures_total", "Failed key set (or discovery) fetches.", []string{"issuer"}, nil)
	descAge            = prometheus.NewDesc("usher_jwks_age_seconds", "Age of the key set in use (since its last good fetch).", []string{"issuer"}, nil)
	descKeys           = prometheus.NewDesc("usher_jwks_keys", "Usable keys held.", []string{"issuer"}, nil)
)

func (c statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheHits, descCacheMisses, descCacheEvictions, descCacheEntries, descCacheBytes, descFetches, descFailures, descAge, descKeys} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.current()
	if v == nil {
		return
	}
	st := v.CacheStats()
	ch <- prometheus.MustNewConstMetric(descCacheHits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(descCacheMisses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(descCacheEvictions, prometheus.CounterValue, float64(st.Evictions))
	ch <- prometheus.MustNewConstMetric(descCacheEntries, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(st.Bytes))
	for _, is := range v.Issuers() {
		ch <- prometheus.MustNewConstMetric(descFetches, prometheus.CounterValue, float64(is.Fetches), is.Issuer)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(is.Failures), is.Issuer)
		ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(len(is.KeyIDs)), is.Issuer)
		if !is.LastRefresh.IsZero() {
			ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, time.Since(is.LastRefresh).Seconds(), is.Issuer)
		}
	}
}
