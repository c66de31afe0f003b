package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/usher-dev/usher/internal/config"
)

const manifestDir = "kubernetes"

// knownKinds is every kind the manifests may use, with its API version.
var knownKinds = map[string]string{
	"ConfigMap":               "v1",
	"Service":                 "v1",
	"Deployment":              "apps/v1",
	"PodDisruptionBudget":     "policy/v1",
	"HorizontalPodAutoscaler": "autoscaling/v2",
	"Kustomization":           "kustomize.config.k8s.io/v1beta1",
}

// The fields of the Kubernetes objects the tests look at, named as in the
// Kubernetes API. Fields the tests do not look at are ignored.
type (
	objectMeta struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	}
	labelSelector struct {
		MatchLabels      map[string]string `yaml:"matchLabels"`
		MatchExpressions []any             `yaml:"matchExpressions"`
	}
	grpcAction struct {
		Port    int     `yaml:"port"`
		Service *string `yaml:"service"`
	}
	probe struct {
		GRPC      *grpcAction `yaml:"grpc"`
		HTTPGet   any         `yaml:"httpGet"`
		TCPSocket any         `yaml:"tcpSocket"`
		Exec      any         `yaml:"exec"`
	}
	seccompProfile struct {
		Type string `yaml:"type"`
	}
	securityContext struct {
		RunAsNonRoot             *bool           `yaml:"runAsNonRoot"`
		RunAsUser                *int64          `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool           `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool           `yaml:"allowPrivilegeEscalation"`
		Privileged               *bool           `yaml:"privileged"`
		SeccompProfile           *seccompProfile `yaml:"seccompProfile"`
		Capabilities             *struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	}
	containerPort struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	}
	container struct {
		Name            string           `yaml:"name"`
		Image           string           `yaml:"image"`
		Command         []string         `yaml:"command"`
		Args            []string         `yaml:"args"`
		Ports           []containerPort  `yaml:"ports"`
		Env             []envVar         `yaml:"env"`
		ReadinessProbe  *probe           `yaml:"readinessProbe"`
		LivenessProbe   *probe           `yaml:"livenessProbe"`
		StartupProbe    *probe           `yaml:"startupProbe"`
		SecurityContext *securityContext `yaml:"securityContext"`
		Resources       resources        `yaml:"resources"`
		VolumeMounts    []volumeMount    `yaml:"volumeMounts"`
	}
	envVar struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	}
	resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	}
	volumeMount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	}
	volume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name  string `yaml:"name"`
			Items []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"configMap"`
	}
	deployment struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     struct {
			Replicas *int          `yaml:"replicas"`
			Selector labelSelector `yaml:"selector"`
			Template struct {
				Metadata objectMeta `yaml:"metadata"`
				Spec     struct {
					SecurityContext *securityContext `yaml:"securityContext"`
					Containers      []container      `yaml:"containers"`
					Volumes         []volume         `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	servicePort struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort any    `yaml:"targetPort"`
	}
	kubeService struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     struct {
			Type      string            `yaml:"type"`
			ClusterIP string            `yaml:"clusterIP"`
			Selector  map[string]string `yaml:"selector"`
			Ports     []servicePort     `yaml:"ports"`
		} `yaml:"spec"`
	}
	configMap struct {
		Metadata objectMeta        `yaml:"metadata"`
		Data     map[string]string `yaml:"data"`
	}
	pdb struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     struct {
			MinAvailable   any           `yaml:"minAvailable"`
			MaxUnavailable any           `yaml:"maxUnavailable"`
			Selector       labelSelector `yaml:"selector"`
		} `yaml:"spec"`
	}
	hpa struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     struct {
			ScaleTargetRef struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Name       string `yaml:"name"`
			} `yaml:"scaleTargetRef"`
			MinReplicas *int `yaml:"minReplicas"`
			MaxReplicas int  `yaml:"maxReplicas"`
			Metrics     []struct {
				Type     string `yaml:"type"`
				Resource *struct {
					Name   string `yaml:"name"`
					Target struct {
						Type               string `yaml:"type"`
						AverageUtilization *int   `yaml:"averageUtilization"`
					} `yaml:"target"`
				} `yaml:"resource"`
			} `yaml:"metrics"`
		} `yaml:"spec"`
	}
	kustomization struct {
		Resources []string         `yaml:"resources"`
		Images    []kustomizeImage `yaml:"images"`
	}
	kustomizeImage struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	}
)

// doc is one YAML document of a file under kubernetes/.
type doc struct {
	file, apiVersion, kind, name string
	node                         *yaml.Node
}

func (d doc) String() string { return d.file + ": " + d.kind + " " + d.name }

// decode reads the document into v.
func (d doc) decode(t *testing.T, v any) {
	t.Helper()
	if err := d.node.Decode(v); err != nil {
		t.Fatalf("%s: %v", d, err)
	}
}

// loadManifests parses every YAML document under kubernetes/.
func loadManifests(t *testing.T) []doc {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.y*ml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests under %s: %v", manifestDir, err)
	}
	var docs []doc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			var head struct {
				APIVersion string     `yaml:"apiVersion"`
				Kind       string     `yaml:"kind"`
				Metadata   objectMeta `yaml:"metadata"`
			}
			if err := n.Decode(&head); err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			docs = append(docs, doc{file: filepath.Base(f), apiVersion: head.APIVersion, kind: head.Kind, name: head.Metadata.Name, node: &n})
		}
	}
	return docs
}

// only returns the single document of kind (and file, when not empty).
func only(t *testing.T, docs []doc, kind, file string) doc {
	t.Helper()
	var found []doc
	for _, d := range docs {
		if d.kind == kind && (file == "" || d.file == file) {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		where := file
		if where == "" {
			where = manifestDir
		}
		t.Fatalf("want one %s in %s, found %d: %v", kind, where, len(found), found)
	}
	return found[0]
}

func TestDeploy_EveryDocumentIsAKnownKind(t *testing.T) {
	docs := loadManifests(t)
	for _, d := range docs {
		want, known := knownKinds[d.kind]
		switch {
		case d.kind == "" || d.apiVersion == "":
			t.Errorf("%s: apiVersion or kind missing", d)
		case !known:
			t.Errorf("%s: kind %q is not one these manifests are checked for", d, d.kind)
		case d.apiVersion != want:
			t.Errorf("%s: apiVersion %q, want %q", d, d.apiVersion, want)
		}
		var meta struct {
			Metadata objectMeta `yaml:"metadata"`
		}
		d.decode(t, &meta)
		if d.kind != "Kustomization" && meta.Metadata.Name == "" {
			t.Errorf("%s: metadata.name missing", d)
		}
		if meta.Metadata.Namespace != "" {
			t.Errorf("%s: metadata.namespace %q is hard-coded; leave it to `kubectl apply -k ... -n NAMESPACE`", d, meta.Metadata.Namespace)
		}
	}
}

func TestDeploy_KustomizationListsEveryFile(t *testing.T) {
	docs := loadManifests(t)
	kd := only(t, docs, "Kustomization", "kustomization.yaml")
	var k kustomization
	kd.decode(t, &k)
	var want []string
	for _, d := range docs {
		if d.file != "kustomization.yaml" && !slices.Contains(want, d.file) {
			want = append(want, d.file)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v, want every manifest file: %v", got, want)
	}
	var dep deployment
	only(t, docs, "Deployment", "").decode(t, &dep)
	for _, c := range dep.Spec.Template.Spec.Containers {
		if !slices.ContainsFunc(k.Images, func(im kustomizeImage) bool { return im.Name == c.Image }) {
			t.Errorf("kustomization.yaml images has no entry for the image %q of container %s", c.Image, c.Name)
		}
	}
}

// dockerfile is what the tests need of deploy/Dockerfile.
type dockerfile struct {
	stages []stage
}

type stage struct {
	from, name string
	lines      []string // instructions, continuation lines joined
}

func (s stage) instr(op string) []string {
	var out []string
	for _, l := range s.lines {
		if o, rest, _ := strings.Cut(l, " "); strings.EqualFold(o, op) {
			out = append(out, strings.TrimSpace(rest))
		}
	}
	return out
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var df dockerfile
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	cur := ""
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, strings.Join(strings.Fields(cur+l), " "))
		cur = ""
	}
	for _, l := range lines {
		op, rest, _ := strings.Cut(l, " ")
		if strings.EqualFold(op, "FROM") {
			f := strings.Fields(rest)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:]
			}
			s := stage{}
			if len(f) > 0 {
				s.from = f[0]
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			df.stages = append(df.stages, s)
			continue
		}
		if len(df.stages) == 0 {
			if !strings.EqualFold(op, "ARG") {
				t.Fatalf("Dockerfile: %q before the first FROM", l)
			}
			continue
		}
		df.stages[len(df.stages)-1].lines = append(df.stages[len(df.stages)-1].lines, l)
	}
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a final stage", len(df.stages))
	}
	return df
}

// execForm parses a JSON exec form such as ["/usher"].
func execForm(t *testing.T, what, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("Dockerfile %s %s: want the exec form [\"...\"]: %v", what, s, err)
	}
	return v
}

// configPath is the --config path of the image's CMD.
func (df dockerfile) configPath(t *testing.T) string {
	t.Helper()
	final := df.stages[len(df.stages)-1]
	cmds := final.instr("CMD")
	if len(cmds) != 1 {
		t.Fatalf("Dockerfile: final stage has %d CMD, want 1", len(cmds))
	}
	args := execForm(t, "CMD", cmds[0])
	i := slices.Index(args, "--config")
	if len(args) == 0 || args[0] != "serve" || i < 0 || i+1 >= len(args) {
		t.Fatalf("Dockerfile CMD %v: want serve --config FILE", args)
	}
	return args[i+1]
}

func TestDeploy_Dockerfile(t *testing.T) {
	df := readDockerfile(t)
	build, final := df.stages[0], df.stages[len(df.stages)-1]
	if build.name == "" || !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("first stage FROM %s AS %q: want a named golang build stage (FROM golang:... AS build)", build.from, build.name)
	}
	runs := strings.Join(build.instr("RUN"), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "go build", "-trimpath", `-ldflags "-s -w"`, "./cmd/usher"} {
		if !strings.Contains(runs, want) {
			t.Errorf("build stage RUN lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", "usher", "main.go")); err != nil {
		t.Errorf("the build stage builds ./cmd/usher: %v", err)
	}

	if final.from == "" || strings.HasPrefix(final.from, "golang:") {
		t.Errorf("final stage FROM %q: want a minimal base, not the build image", final.from)
	}
	users := final.instr("USER")
	nonroot := strings.HasSuffix(final.from, ":nonroot")
	if len(users) > 0 {
		u, _, _ := strings.Cut(users[len(users)-1], ":")
		nonroot = u != "" && u != "0" && u != "root"
	}
	if !nonroot {
		t.Errorf("final stage runs as root: want USER with a non-root uid or a :nonroot base (FROM %s, USER %v)", final.from, users)
	}
	if strings.HasPrefix(final.from, "scratch") && len(final.instr("USER")) == 0 {
		t.Error("a scratch final stage needs an explicit USER")
	}

	eps := final.instr("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("final stage has %d ENTRYPOINT, want 1", len(eps))
	}
	ep := execForm(t, "ENTRYPOINT", eps[0])
	if len(ep) != 1 || ep[0] != "/usher" {
		t.Errorf("ENTRYPOINT %v, want [\"/usher\"]", ep)
	}
	copied := false
	for _, c := range final.instr("COPY") {
		f := strings.Fields(c)
		if len(f) >= 3 && f[0] == "--from="+build.name && f[len(f)-1] == ep[0] {
			copied = true
		}
	}
	if !copied {
		t.Errorf("final stage does not COPY --from=%s the binary to %s", build.name, ep[0])
	}
	if p := df.configPath(t); !path.IsAbs(p) {
		t.Errorf("CMD --config %q: want an absolute path", p)
	}
	var exposed []string
	for _, e := range final.instr("EXPOSE") {
		exposed = append(exposed, strings.Fields(e)...)
	}
	for _, port := range []string{"50051", "9090"} {
		if !slices.Contains(exposed, port) && !slices.Contains(exposed, port+"/tcp") {
			t.Errorf("EXPOSE lacks %s (have %v)", port, exposed)
		}
	}
}

// TestDeploy_DockerignoreKeepsTheSources: the build context must still hold
// what `go build ./cmd/usher` needs.
func TestDeploy_DockerignoreKeepsTheSources(t *testing.T) {
	b, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	entries, err := os.ReadDir("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && e.Name() != "deploy" && !strings.HasPrefix(e.Name(), ".") && hasGoSource(filepath.Join("..", e.Name())) {
			needed = append(needed, e.Name())
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		p := strings.TrimPrefix(strings.TrimSpace(line), "/")
		if p == "" || strings.HasPrefix(p, "#") || strings.HasPrefix(p, "!") {
			continue
		}
		if slices.Contains([]string{"*", "**", "*.go", "**/*.go"}, p) {
			t.Errorf("Dockerfile.dockerignore pattern %q drops the Go sources from the build context", line)
			continue
		}
		for _, n := range needed {
			if ok, _ := filepath.Match(p, n); ok {
				t.Errorf("Dockerfile.dockerignore pattern %q drops %s from the build context", line, n)
			}
		}
	}
}

func hasGoSource(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// subset reports whether every label of sel is in labels (and sel is not empty).
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestDeploy_Deployment(t *testing.T) {
	docs := loadManifests(t)
	var dep deployment
	only(t, docs, "Deployment", "deployment.yaml").decode(t, &dep)
	spec := dep.Spec
	if spec.Replicas == nil || *spec.Replicas != 3 {
		t.Errorf("replicas = %s, want 3", intOrUnset(spec.Replicas))
	}
	podLabels := spec.Template.Metadata.Labels
	if !subset(spec.Selector.MatchLabels, podLabels) || len(spec.Selector.MatchExpressions) > 0 {
		t.Errorf("selector %v does not select the pod template's labels %v", spec.Selector.MatchLabels, podLabels)
	}
	if len(spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, found %d", len(spec.Template.Spec.Containers))
	}
	c := spec.Template.Spec.Containers[0]
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 50051 || ports["metrics"] != 9090 {
		t.Errorf("container ports %v, want grpc 50051 and metrics 9090", ports)
	}

	// Probes: Kubernetes' native gRPC health checks on the gRPC port.
	checkGRPC := func(what string, p *probe, service string) {
		t.Helper()
		switch {
		case p == nil:
			t.Errorf("%s missing", what)
		case p.GRPC == nil || p.HTTPGet != nil || p.TCPSocket != nil || p.Exec != nil:
			t.Errorf("%s is not (only) a grpc probe", what)
		case p.GRPC.Port != 50051:
			t.Errorf("%s probes port %d, want 50051", what, p.GRPC.Port)
		case p.GRPC.Service == nil && service != "", p.GRPC.Service != nil && *p.GRPC.Service != service:
			t.Errorf("%s checks service %q, want %q", what, deref(p.GRPC.Service), service)
		}
	}
	checkGRPC("readinessProbe", c.ReadinessProbe, "usher.v1.TokenService")
	checkGRPC("livenessProbe", c.LivenessProbe, "")
	if c.StartupProbe != nil {
		checkGRPC("startupProbe", c.StartupProbe, "")
	}

	// Security: non-root, read-only root, no capabilities, RuntimeDefault seccomp.
	pod, ctr := spec.Template.Spec.SecurityContext, c.SecurityContext
	if pod == nil {
		pod = &securityContext{}
	}
	if ctr == nil {
		t.Fatal("container securityContext missing")
	}
	if !isTrue(ctr.RunAsNonRoot) && !(isTrue(pod.RunAsNonRoot) && ctr.RunAsNonRoot == nil) {
		t.Error("runAsNonRoot is not true")
	}
	for _, u := range []*int64{pod.RunAsUser, ctr.RunAsUser} {
		if u != nil && *u == 0 {
			t.Error("runAsUser 0 (root)")
		}
	}
	if !isTrue(ctr.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if ctr.AllowPrivilegeEscalation == nil || *ctr.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if isTrue(ctr.Privileged) {
		t.Error("privileged container")
	}
	if ctr.Capabilities == nil || !slices.Contains(ctr.Capabilities.Drop, "ALL") || len(ctr.Capabilities.Add) > 0 {
		t.Errorf("capabilities: want drop [ALL] and nothing added, got %+v", ctr.Capabilities)
	}
	seccomp := ctr.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != "RuntimeDefault" {
		t.Errorf("seccompProfile: want RuntimeDefault, got %+v", seccomp)
	}

	// Resources: requests and limits for CPU and memory, requests within limits.
	for _, r := range []string{"cpu", "memory"} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		rq, err1 := quantity(req)
		lq, err2 := quantity(lim)
		if err1 != nil || err2 != nil {
			t.Errorf("resources %s: requests %q, limits %q: %v", r, req, lim, errors.Join(err1, err2))
			continue
		}
		if rq > lq {
			t.Errorf("resources %s: request %s above limit %s", r, req, lim)
		}
	}
	if cpu, _ := quantity(c.Resources.Requests["cpu"]); cpu < 0.05 || cpu > 0.5 {
		t.Errorf("requests.cpu %s: the sizing comment derives about 100m", c.Resources.Requests["cpu"])
	}
	memLimit, _ := quantity(c.Resources.Limits["memory"])
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			if v, err := quantity(strings.TrimSuffix(e.Value, "B")); err != nil || v >= memLimit {
				t.Errorf("GOMEMLIMIT %q: want a size below limits.memory %s", e.Value, c.Resources.Limits["memory"])
			}
		}
	}

	// The config: the image's CMD reads --config from the mounted ConfigMap.
	if len(c.Command) > 0 || len(c.Args) > 0 {
		t.Errorf("command %v args %v override the image's ENTRYPOINT and CMD", c.Command, c.Args)
	}
	df := readDockerfile(t)
	cfgPath := df.configPath(t)
	var cm configMap
	only(t, docs, "ConfigMap", "configmap.yaml").decode(t, &cm)
	mounted := false
	for _, m := range c.VolumeMounts {
		vi := slices.IndexFunc(spec.Template.Spec.Volumes, func(v volume) bool { return v.Name == m.Name })
		if vi < 0 {
			t.Errorf("volumeMount %s names no volume", m.Name)
			continue
		}
		v := spec.Template.Spec.Volumes[vi]
		if v.ConfigMap == nil || v.ConfigMap.Name != cm.Metadata.Name {
			continue
		}
		if !m.ReadOnly {
			t.Errorf("config volume %s is mounted read-write", m.Name)
		}
		// The file the CMD reads: mountPath/<item path or key>, or mountPath itself with subPath.
		files := map[string]string{} // path in the container -> ConfigMap key
		if m.SubPath != "" {
			files[m.MountPath] = m.SubPath
		} else if len(v.ConfigMap.Items) > 0 {
			for _, it := range v.ConfigMap.Items {
				files[path.Join(m.MountPath, it.Path)] = it.Key
			}
		} else {
			for k := range cm.Data {
				files[path.Join(m.MountPath, k)] = k
			}
		}
		if key, ok := files[cfgPath]; ok {
			mounted = true
			if _, ok := cm.Data[key]; !ok {
				t.Errorf("%s is ConfigMap key %q, which %s lacks", cfgPath, key, cm.Metadata.Name)
			}
		}
	}
	if !mounted {
		t.Errorf("no volumeMount puts ConfigMap %s at %s, the --config path of the image's CMD", cm.Metadata.Name, cfgPath)
	}
	if runAs := pod.RunAsUser; runAs != nil {
		for _, u := range df.stages[len(df.stages)-1].instr("USER") {
			uid, _, _ := strings.Cut(u, ":")
			if n, err := strconv.ParseInt(uid, 10, 64); err == nil && n != *runAs {
				t.Errorf("pod runAsUser %d differs from the image's USER %s", *runAs, u)
			}
		}
	}
}

// TestDeploy_ConfigMapIsAValidUsherConfig: the ConfigMap's usher.yaml passes
// usher's own config validation and listens where the probes and Services look.
func TestDeploy_ConfigMapIsAValidUsherConfig(t *testing.T) {
	docs := loadManifests(t)
	var cm configMap
	only(t, docs, "ConfigMap", "configmap.yaml").decode(t, &cm)
	key := path.Base(readDockerfile(t).configPath(t))
	raw, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q", cm.Metadata.Name, key)
	}
	cfg, err := config.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("ConfigMap %s %s is not a valid usher config:\n%v", cm.Metadata.Name, key, err)
	}
	for what, addr := range map[string]string{"listen": cfg.Listen, "metrics_listen": cfg.MetricsListen} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("%s %q: %v", what, addr, err)
			continue
		}
		want := map[string]string{"listen": "50051", "metrics_listen": "9090"}[what]
		if port != want {
			t.Errorf("%s %q: want port %s, the container port the probes and Services use", what, addr, want)
		}
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			t.Errorf("%s %q is loopback: the kubelet's probes and the Services reach the pod IP", what, addr)
		}
	}
	if len(cfg.Engine.Issuers) == 0 {
		t.Error("no issuer")
	}
	var dep deployment
	only(t, docs, "Deployment", "deployment.yaml").decode(t, &dep)
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range []*probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if p != nil && p.GRPC != nil && cfg.TLS != nil {
				t.Errorf("usher.yaml configures tls, but the kubelet's grpc probes speak plaintext only: they would always fail")
			}
		}
	}
}

func TestDeploy_Services(t *testing.T) {
	docs := loadManifests(t)
	var dep deployment
	only(t, docs, "Deployment", "deployment.yaml").decode(t, &dep)
	podLabels := dep.Spec.Template.Metadata.Labels
	ports := map[string]int{}
	for _, p := range dep.Spec.Template.Spec.Containers[0].Ports {
		ports[p.Name] = p.ContainerPort
	}
	// target resolves a Service's targetPort (a name or a number, default
	// the port) to a container port number.
	target := func(p servicePort) int {
		switch v := p.TargetPort.(type) {
		case nil:
			return p.Port
		case int:
			return v
		case string:
			return ports[v]
		}
		return 0
	}
	check := func(file string, wantPorts map[string]int) kubeService {
		t.Helper()
		var s kubeService
		only(t, docs, "Service", file).decode(t, &s)
		if !subset(s.Spec.Selector, podLabels) {
			t.Errorf("%s: selector %v does not select the Deployment's pods %v", file, s.Spec.Selector, podLabels)
		}
		got := map[string]int{}
		for _, p := range s.Spec.Ports {
			got[p.Name] = p.Port
			if tp := target(p); tp != ports[p.Name] || tp == 0 {
				t.Errorf("%s: port %s targets %v, not container port %s", file, p.Name, p.TargetPort, p.Name)
			}
		}
		for name, port := range wantPorts {
			if got[name] != port {
				t.Errorf("%s: port %s = %d, want %d", file, name, got[name], port)
			}
		}
		return s
	}
	h := check("service-headless.yaml", map[string]int{"grpc": 50051})
	if h.Spec.ClusterIP != "None" {
		t.Errorf("service-headless.yaml: clusterIP %q, want None (DNS must list every pod for client-side round_robin)", h.Spec.ClusterIP)
	}
	if h.Metadata.Name != "usher-headless" {
		t.Errorf("headless Service is named %q; clients dial dns:///usher-headless.<ns>.svc.cluster.local:50051", h.Metadata.Name)
	}
	s := check("service.yaml", map[string]int{"grpc": 50051, "metrics": 9090})
	if s.Spec.ClusterIP == "None" || (s.Spec.Type != "" && s.Spec.Type != "ClusterIP") {
		t.Errorf("service.yaml: type %q clusterIP %q, want a normal ClusterIP Service", s.Spec.Type, s.Spec.ClusterIP)
	}
}

func TestDeploy_PDBAndHPATargetTheDeployment(t *testing.T) {
	docs := loadManifests(t)
	var dep deployment
	only(t, docs, "Deployment", "deployment.yaml").decode(t, &dep)
	replicas := 1
	if dep.Spec.Replicas != nil {
		replicas = *dep.Spec.Replicas
	}

	var p pdb
	only(t, docs, "PodDisruptionBudget", "pdb.yaml").decode(t, &p)
	if !subset(p.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) {
		t.Errorf("pdb.yaml: selector %v does not select the Deployment's pods", p.Spec.Selector.MatchLabels)
	}
	switch {
	case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
		t.Error("pdb.yaml: set minAvailable or maxUnavailable, not both")
	case p.Spec.MaxUnavailable != nil:
		if p.Spec.MaxUnavailable != 1 {
			t.Errorf("pdb.yaml: maxUnavailable %v, want 1", p.Spec.MaxUnavailable)
		}
	case p.Spec.MinAvailable != nil:
		if n, ok := p.Spec.MinAvailable.(int); !ok || n < 2 || n >= replicas {
			t.Errorf("pdb.yaml: minAvailable %v: want 2..%d so that a drain can proceed", p.Spec.MinAvailable, replicas-1)
		}
	default:
		t.Error("pdb.yaml: neither minAvailable nor maxUnavailable")
	}

	var h hpa
	only(t, docs, "HorizontalPodAutoscaler", "hpa.yaml").decode(t, &h)
	ref := h.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != dep.Metadata.Name {
		t.Errorf("hpa.yaml: scaleTargetRef %+v, want apps/v1 Deployment %s", ref, dep.Metadata.Name)
	}
	if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 3 || h.Spec.MaxReplicas != 10 {
		t.Errorf("hpa.yaml: replicas %s..%d, want 3..10", intOrUnset(h.Spec.MinReplicas), h.Spec.MaxReplicas)
	}
	if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas < replicas {
		t.Errorf("hpa.yaml: minReplicas %d below the Deployment's %d", *h.Spec.MinReplicas, replicas)
	}
	cpu := false
	for _, m := range h.Spec.Metrics {
		if m.Type == "Resource" && m.Resource != nil && m.Resource.Name == "cpu" &&
			m.Resource.Target.Type == "Utilization" && m.Resource.Target.AverageUtilization != nil && *m.Resource.Target.AverageUtilization == 70 {
			cpu = true
		}
	}
	if !cpu {
		t.Error("hpa.yaml: no Resource cpu metric with averageUtilization 70")
	}
	if _, ok := dep.Spec.Template.Spec.Containers[0].Resources.Requests["cpu"]; !ok {
		t.Error("the HPA's CPU utilization needs requests.cpu on the container")
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

func intOrUnset(n *int) string {
	if n == nil {
		return "unset"
	}
	return strconv.Itoa(*n)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// quantity parses the Kubernetes quantities the manifests use (100m, 1,
// 64Mi, 1Gi, 500M) into base units.
func quantity(s string) (float64, error) {
	if s == "" {
		return 0, errors.New("not set")
	}
	mult := 1.0
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"m", 1e-3}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, errors.New("not a quantity")
	}
	return v * mult, nil
}
