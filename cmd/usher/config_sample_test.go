package main

import (
	"os"
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/config"
)

// TestConfigSample: the README's Configuration block is
// examples/config/usher.yaml, and that file is a valid config as it stands
// (run from the repository root, as the README says: its paths are
// relative to it). .ci/readme runs doctor and serve with it against usher dev.
func TestConfigSample(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sample, err := os.ReadFile("../../examples/config/usher.yaml")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	i := strings.Index(section, "\n## Configuration")
	if i < 0 {
		t.Fatal("the README has no Configuration section")
	}
	section = section[i:]
	start := strings.Index(section, "```yaml\n")
	end := strings.Index(section[start+8:], "```\n")
	if start < 0 || end < 0 {
		t.Fatal("the README's Configuration section has no yaml block")
	}
	if block := section[start+8 : start+8+end]; block != string(sample) {
		t.Errorf("the README's Configuration block differs from examples/config/usher.yaml: copy the file into the README")
	}
	t.Chdir("../..")
	c, err := config.Load("examples/config/usher.yaml")
	if err != nil {
		t.Fatalf("examples/config/usher.yaml: %v", err)
	}
	is := c.Engine.Issuers
	if len(is) != 1 || is[0].Introspection == nil {
		t.Fatalf("examples/config/usher.yaml: want one issuer with introspection, got %+v", is)
	}
	secret, err := os.ReadFile(is[0].Introspection.ClientSecretFile)
	if err != nil || strings.TrimSpace(string(secret)) == "" {
		t.Errorf("client_secret_file %s: %v", is[0].Introspection.ClientSecretFile, err)
	}
}
