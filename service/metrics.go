package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// otherLabel stands for every value outside a bounded set (an unregistered
// audience, an untrusted issuer), so that label cardinality stays bounded.
const otherLabel = "other"

// Metrics are usher's own Prometheus metrics. Make them once per process
// with NewMetrics on a registry the caller owns, and pass them to each
// Validator with WithMetrics.
type Metrics struct {
	verdicts   *prometheus.CounterVec
	latency    prometheus.Histogram
	mismatches *prometheus.CounterVec
}

// NewMetrics registers usher's verdict metrics on reg:
//
//	usher_verdicts_total{reason, issuer, audience}
//	usher_validation_seconds
//	usher_audience_mismatches_total{expected, actual}   "top audience mismatches"
//
// issuer is a configured issuer or "other"; audiences are registered
// audiences or "other".
func NewMetrics(reg prometheus.Registerer) *Metrics {
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
	reg.MustRegister(m.verdicts, m.latency, m.mismatches)
	return m
}

func (m *Metrics) observe(v *Verdict, issuer, audience string, registered map[string]string, took time.Duration) {
	aud := boundedAudience(audience, registered)
	if issuer == "" {
		issuer = otherLabel
	}
	m.verdicts.WithLabelValues(v.Reason.String(), issuer, aud).Inc()
	m.latency.Observe(took.Seconds())
	if v.Reason == ReasonAudienceMismatch && v.Claims != nil {
		actual := otherLabel
		for _, a := range v.Claims.Audience {
			if _, ok := registered[a]; ok {
				actual = a
				break
			}
		}
		m.mismatches.WithLabelValues(aud, actual).Inc()
	}
}

func boundedAudience(a string, registered map[string]string) string {
	if _, ok := registered[a]; ok {
		return a
	}
	return otherLabel
}

// StatusCollector exports what a running usher holds, read at scrape time:
// the verified-token cache's counters and each issuer's key set. current
// returns the validator in service (it changes on reload).
func StatusCollector(current func() *Validator) prometheus.Collector {
	return statusCollector{current: current}
}

type statusCollector struct{ current func() *Validator }

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
