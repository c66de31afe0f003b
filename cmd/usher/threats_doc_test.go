package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// threatRefRE is a test reference of docs/threats.md: an inline code span
// `PKG: NAME` or `PKG: NAME/SUBTEST`, where PKG is a package directory from
// the repository root and NAME a top-level Test, Fuzz or Benchmark function.
var threatRefRE = regexp.MustCompile("`([a-z0-9_./-]+): ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]*)(/[^`]*)?`")

// TestThreatModelNamesRealTests keeps the "proved by" column of the threat
// model honest about names: every test it cites must exist as a top-level
// function in a _test.go file of the package it names. Subtests are not
// checked (many are built in loops); whether a test proves its row is for
// review.
func TestThreatModelNamesRealTests(t *testing.T) {
	const root = "../.."
	doc, err := os.ReadFile(filepath.Join(root, "docs", "threats.md"))
	if err != nil {
		t.Fatal(err)
	}
	refs := threatRefRE.FindAllStringSubmatch(string(doc), -1)
	if len(refs) < 50 {
		t.Fatalf("docs/threats.md cites %d tests; the reference syntax `pkg: TestName[/subtest]` no longer matches?", len(refs))
	}
	sources := map[string]string{} // package directory -> its _test.go files, concatenated
	for _, ref := range refs {
		pkg, name := ref[1], ref[2]
		if strings.Contains(pkg, "..") || strings.HasPrefix(pkg, "/") {
			t.Errorf("%s: the package must be a directory inside the repository", ref[0])
			continue
		}
		src, ok := sources[pkg]
		if !ok {
			files, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(pkg), "*_test.go"))
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, f := range files {
				data, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				b.WriteByte('\n')
				b.Write(data)
			}
			src = b.String()
			sources[pkg] = src
		}
		if src == "" {
			t.Errorf("%s: no _test.go file in %s", ref[0], pkg)
			continue
		}
		if !strings.Contains(src, "\nfunc "+name+"(") {
			t.Errorf("%s: no func %s( in %s/*_test.go", ref[0], name, pkg)
		}
	}
}
