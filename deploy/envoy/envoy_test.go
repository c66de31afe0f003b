// Package envoy holds a working Envoy configuration that puts usher in front
// of two APIs; its test checks the file, since Envoy itself cannot run here.
package envoy

import (
	"encoding/json"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/internal/config"
)

const extAuthzFilter = "envoy.filters.http.ext_authz"

// load parses envoy.yaml as YAML, then as Envoy's own Bootstrap message
// (unknown fields and wrong types are errors), and runs the constraints
// Envoy's protos declare (protoc-gen-validate).
func load(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("envoy.yaml as JSON: %v", err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("envoy.yaml is not an Envoy v3 Bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("envoy.yaml fails Envoy's constraints: %v", err)
	}
	return &bs
}

func unpack[M proto.Message](t *testing.T, what string, a *anypb.Any, m M) M {
	t.Helper()
	if a == nil {
		t.Fatalf("%s: no typed_config", what)
	}
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("%s: typed_config is %s: %v", what, a.GetTypeUrl(), err)
	}
	return m
}

func TestEnvoyConfig(t *testing.T) {
	bs := load(t)
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}

	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("%d listeners, want 1", len(listeners))
	}
	sa := listeners[0].GetAddress().GetSocketAddress()
	if sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != 8080 {
		t.Errorf("listener on %s:%d, want 0.0.0.0:8080", sa.GetAddress(), sa.GetPortValue())
	}
	var hcm *hcmv3.HttpConnectionManager
	for _, fc := range listeners[0].GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() == "envoy.filters.network.http_connection_manager" {
				hcm = unpack(t, f.GetName(), f.GetTypedConfig(), &hcmv3.HttpConnectionManager{})
			}
		}
	}
	if hcm == nil {
		t.Fatal("no http_connection_manager")
	}
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
		t.Error("normalize_path and merge_slashes must be on: usher and the router must see the same path")
	}

	// The ext_authz filter: first, pointing at usher, failing closed.
	filters := hcm.GetHttpFilters()
	if len(filters) < 2 || filters[0].GetName() != extAuthzFilter || filters[len(filters)-1].GetName() != "envoy.filters.http.router" {
		names := []string{}
		for _, f := range filters {
			names = append(names, f.GetName())
		}
		t.Fatalf("http_filters %q: want %s first and the router last", names, extAuthzFilter)
	}
	unpack(t, "router", filters[len(filters)-1].GetTypedConfig(), &routerv3.Router{})
	az := unpack(t, extAuthzFilter, filters[0].GetTypedConfig(), &extauthzv3.ExtAuthz{})
	if got := az.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != "usher" {
		t.Errorf("ext_authz grpc_service cluster %q, want usher", got)
	}
	if az.GetFailureModeAllow() {
		t.Error("failure_mode_allow is true: requests would pass when usher cannot answer")
	}
	if az.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("transport_api_version %v, want V3", az.GetTransportApiVersion())
	}
	if az.GetWithRequestBody() != nil {
		t.Error("with_request_body is set: usher needs headers only")
	}
	if az.GetIncludePeerCertificate() {
		t.Error("include_peer_certificate is true")
	}
	if az.GetStatusOnError().GetCode() != 503 {
		t.Errorf("status_on_error %v, want 503", az.GetStatusOnError().GetCode())
	}

	// The usher cluster speaks HTTP/2 to usher:50051.
	uc := clusters["usher"]
	if uc == nil {
		t.Fatal("no cluster usher")
	}
	opts := unpack(t, "usher protocol options", uc.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &httpv3.HttpProtocolOptions{})
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("cluster usher does not use HTTP/2: gRPC needs it")
	}
	ep := uc.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if ep.GetAddress() != "usher" || ep.GetPortValue() != 50051 {
		t.Errorf("cluster usher at %s:%d, want usher:50051", ep.GetAddress(), ep.GetPortValue())
	}

	// Every route names its audience, and leads to a defined cluster.
	want := map[string]string{"users": "api/users", "invoices": "api/invoices"}
	seen := map[string]bool{}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for i, r := range vh.GetRoutes() {
			cluster := r.GetRoute().GetCluster()
			if clusters[cluster] == nil {
				t.Errorf("virtual host %s route %d: cluster %q is not defined", vh.GetName(), i, cluster)
			}
			per := r.GetTypedPerFilterConfig()[extAuthzFilter]
			if per == nil {
				t.Errorf("virtual host %s route %d (cluster %s): no typed_per_filter_config for %s", vh.GetName(), i, cluster, extAuthzFilter)
				continue
			}
			pr := unpack(t, "per-route "+extAuthzFilter, per, &extauthzv3.ExtAuthzPerRoute{})
			if pr.GetDisabled() {
				t.Errorf("route %d (cluster %s) disables ext_authz", i, cluster)
			}
			aud := pr.GetCheckSettings().GetContextExtensions()[extauthz.ContextAudience]
			if aud == "" {
				t.Errorf("route %d (cluster %s) sets no %s context extension", i, cluster, extauthz.ContextAudience)
			}
			if w, ok := want[cluster]; ok && aud != w {
				t.Errorf("route to %s: %s %q, want %q", cluster, extauthz.ContextAudience, aud, w)
			}
			seen[cluster] = true
		}
	}
	for c := range want {
		if !seen[c] || clusters[c] == nil {
			t.Errorf("no route to cluster %s", c)
		}
	}
}

// composeFile is the part of compose.yaml the test reads.
type composeFile struct {
	Services map[string]struct {
		Image string `yaml:"image"`
		Build *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Command []string `yaml:"command"`
		Volumes []string `yaml:"volumes"`
		Ports   []string `yaml:"ports"`
	} `yaml:"services"`
}

// TestCompose: compose.yaml runs what envoy.yaml dials. Every cluster's
// host is a service listening on the cluster's port, usher's config parses
// and serves ext_authz there, the config files are mounted where the images
// read them, and every image is pinned.
func TestCompose(t *testing.T) {
	bs := load(t)
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	names := slices.Sorted(maps.Keys(cf.Services))
	if want := []string{"envoy", "invoices", "users", "usher"}; !slices.Equal(names, want) {
		t.Errorf("compose.yaml services %v, want %v", names, want)
	}
	usherPort := composeUsher(t, &cf)
	for _, c := range bs.GetStaticResources().GetClusters() {
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		svc, ok := cf.Services[sa.GetAddress()]
		port := strconv.Itoa(int(sa.GetPortValue()))
		switch {
		case !ok:
			t.Errorf("cluster %s dials %s, which compose.yaml does not define", c.GetName(), sa.GetAddress())
		case sa.GetAddress() == "usher" && port != usherPort:
			t.Errorf("cluster usher dials port %s, usher.yaml listens on %s", port, usherPort)
		case sa.GetAddress() != "usher" && !slices.Contains(svc.Command, "--port="+port):
			t.Errorf("cluster %s dials port %s; service %s's command %v does not listen there", c.GetName(), port, sa.GetAddress(), svc.Command)
		}
	}
	envoy := cf.Services["envoy"]
	if !slices.Contains(envoy.Volumes, "./envoy.yaml:/etc/envoy/envoy.yaml:ro") {
		t.Errorf("envoy does not mount envoy.yaml at the image's default path: %v", envoy.Volumes)
	}
	lis := bs.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue()
	if len(envoy.Ports) != 1 || !strings.HasPrefix(envoy.Ports[0], "127.0.0.1:") || !strings.HasSuffix(envoy.Ports[0], ":"+strconv.Itoa(int(lis))) {
		t.Errorf("envoy publishes %v, want its listener's port %d on the host's loopback", envoy.Ports, lis)
	}
	for name, svc := range cf.Services {
		if tag := svc.Image[strings.LastIndexByte(svc.Image, ':')+1:]; !strings.Contains(svc.Image, ":") || tag == "latest" {
			t.Errorf("service %s: image %q is not pinned to a version", name, svc.Image)
		}
	}
}

// composeUsher checks the usher service: built from deploy/Dockerfile,
// its config mounted where the image's CMD reads it, no published port,
// and a config that parses and serves ext_authz. It returns the port usher
// listens on.
func composeUsher(t *testing.T, cf *composeFile) string {
	t.Helper()
	u := cf.Services["usher"]
	if u.Build == nil || u.Build.Context != "../.." || u.Build.Dockerfile != "deploy/Dockerfile" {
		t.Fatalf("usher is not built from deploy/Dockerfile with the repository as its context: %+v", u.Build)
	}
	df, err := os.ReadFile(filepath.Join(u.Build.Context, u.Build.Dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	cmd := regexp.MustCompile(`(?m)^CMD \["serve", "--config", "([^"]+)"\]`).FindSubmatch(df)
	if cmd == nil || !slices.Contains(u.Volumes, "./usher.yaml:"+string(cmd[1])+":ro") {
		t.Errorf("usher does not mount usher.yaml at the image's --config path (%s): %v", cmd, u.Volumes)
	}
	if len(u.Ports) != 0 {
		t.Errorf("usher publishes %v: it serves plaintext, for Envoy on the compose network only", u.Ports)
	}
	b, err := os.ReadFile("usher.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(b)
	if err != nil {
		t.Fatalf("usher.yaml: %v", err)
	}
	if c.ExtAuthz == nil {
		t.Error("usher.yaml has no ext_authz section: Envoy's Check calls would be unimplemented")
	}
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
