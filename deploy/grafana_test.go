package deploy_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-dev/usher/internal/metrics"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

const dashboardFile = "grafana/usher-dashboard.json"

// scrapeLabels are added by Prometheus to every series it scrapes; le is a
// histogram bucket's bound.
var scrapeLabels = []string{"job", "instance", "le"}

// exported is what usher's /metrics serves: every series name, with the
// label names it carries. It is gathered from a registry built the way
// `usher serve` builds its own (cmd/usher/serve.go: metrics.New,
// metrics.NewReplayStore, go-grpc-middleware's server metrics, the Go and
// process collectors, metrics.StatusCollector), after one event of each
// kind was recorded, so that every vector has a series.
func exported(t *testing.T) map[string][]string {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	replay := metrics.NewReplayStore(reg)
	grpcMet := grpcprom.NewServerMetrics()
	reg.MustRegister(grpcMet, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	const iss = "https://auth.example.com/"
	k := testkit.EdKey(t, "k1")
	cfg := &service.Config{Issuers: []service.IssuerConfig{{Issuer: iss, JWKSFile: testkit.WriteJWKS(t, k)}}}
	v, err := service.NewValidator(testkit.Context(t), cfg, service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(metrics.StatusCollector(func() *service.Validator { return v }))

	m.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Issuer: iss, Audience: "api/invoices", TokenAudience: "api/users", Took: time.Millisecond})
	m.ObserveIntrospection(service.IntrospectionEvent{Issuer: iss, Outcome: service.IntrospectionTimeout, Took: time.Second})
	m.ObserveIntrospectionLookup(service.IntrospectionLookup{Issuer: iss, Hit: true})
	m.ObserveIntrospectionLookup(service.IntrospectionLookup{Issuer: iss, Shed: true})
	replay.Observe(time.Millisecond, fmt.Errorf("replay store down"))
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	grpcMet.InitializeMetrics(gs) // a series per method and code, as serve's interceptors make them

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		var labels []string
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if !slices.Contains(labels, l.GetName()) {
					labels = append(labels, l.GetName())
				}
			}
		}
		for _, name := range seriesNames(mf) {
			out[name] = labels
		}
	}
	return out
}

// seriesNames are the names a family's samples have in the exposition
// format (a histogram's _bucket, _sum and _count).
func seriesNames(mf *dto.MetricFamily) []string {
	n := mf.GetName()
	switch mf.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return []string{n + "_bucket", n + "_sum", n + "_count"}
	case dto.MetricType_SUMMARY:
		return []string{n, n + "_sum", n + "_count"}
	}
	return []string{n}
}

// The dashboard's JSON and each panel's title, its queries and its
// variables' queries: every metric a query names is one usher exports,
// and every label it filters or groups by is one of that metric's (or one
// Prometheus adds).
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	checkDashboardFrame(t, d)
	have := exported(t)
	seen := map[string]bool{}
	queries := 0
	for _, p := range d.panels() {
		if strings.TrimSpace(p.Title) == "" {
			t.Errorf("panel %d (%s) has no title", p.ID, p.Type)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource %+v, want the ${DS_PROMETHEUS} input", p.Title, tg.Datasource)
			}
			checkQuery(t, fmt.Sprintf("panel %q", p.Title), tg.Expr, have, seen)
		}
	}
	for _, v := range d.Templating.List {
		metric, label, ok := labelValues(v.Definition)
		if !ok {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, v.Definition)
			continue
		}
		checkQuery(t, "variable "+v.Name, metric, have, seen)
		if !slices.Contains(append(have[name(metric)], scrapeLabels...), label) {
			t.Errorf("variable %s: %s has no label %q", v.Name, name(metric), label)
		}
	}
	for _, want := range []string{"usher_verdicts_total", "usher_audience_mismatches_total", "usher_validation_seconds_bucket", "usher_jwks_age_seconds", "usher_cache_hits_total", "usher_introspection_calls_total", "usher_dpop_replay_store_errors_total"} {
		if !seen[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
	if !t.Failed() {
		t.Logf("%d queries over %d metrics, all exported by usher", queries, len(seen))
	}
}

// checkDashboardFrame: an importable dashboard with a Prometheus input.
func checkDashboardFrame(t *testing.T, d dashboard) {
	t.Helper()
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d: want one of Grafana 9 to 11 (36..41)", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: both are needed", d.Title, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v: want one Prometheus datasource input, DS_PROMETHEUS", d.Inputs)
	}
	ids := map[int]bool{}
	for _, p := range d.panels() {
		if ids[p.ID] {
			t.Errorf("panel id %d is used twice", p.ID)
		}
		ids[p.ID] = true
	}
}

// checkQuery checks that expr names only series in have, and only their
// labels; seen collects the names.
func checkQuery(t *testing.T, where, expr string, have map[string][]string, seen map[string]bool) {
	t.Helper()
	q, err := parsePromQL(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return
	}
	if len(q.metrics) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	var allowed []string
	for _, s := range q.metrics {
		labels, ok := have[s.name]
		if !ok {
			t.Errorf("%s: %s is not a metric usher exports", where, s.name)
			continue
		}
		seen[s.name] = true
		allowed = append(allowed, labels...)
		for _, l := range s.labels {
			if !slices.Contains(labels, l) && !slices.Contains(scrapeLabels, l) {
				t.Errorf("%s: %s has no label %q (it has %v)", where, s.name, l, labels)
			}
		}
	}
	for _, l := range q.grouping {
		if !slices.Contains(allowed, l) && !slices.Contains(scrapeLabels, l) {
			t.Errorf("%s: groups by %q, a label of none of %v", where, l, q.metrics)
		}
	}
}

// name is a selector's metric name.
func name(selector string) string {
	n, _, _ := strings.Cut(selector, "{")
	return strings.TrimSpace(n)
}

// labelValues splits Grafana's label_values(metric{…}, label).
func labelValues(q string) (metric, label string, ok bool) {
	inner, ok := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return "", "", false
	}
	inner = strings.TrimSuffix(inner, ")")
	i := strings.LastIndex(inner, ",")
	if i < 0 {
		return "", "", false
	}
	return strings.TrimSpace(inner[:i]), strings.TrimSpace(inner[i+1:]), true
}

// dashboard is the part of Grafana's dashboard JSON the test reads.
type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	SchemaVersion int     `json:"schemaVersion"`
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // a collapsed row's
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

// panels is every panel, those inside collapsed rows included.
func (d dashboard) panels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}
