package main

import (
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestCommandTable_Documented keeps the package documentation and the
// README's Commands table in step with the commands table that dispatches.
func TestCommandTable_Documented(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	for _, line := range strings.Split(f.Doc.Text(), "\n") {
		if strings.HasPrefix(line, "\t") {
			block = append(block, line)
		}
	}
	want := strings.Split(strings.TrimSuffix(commandList("\t"), "\n"), "\n")
	if strings.Join(block, "\n") != strings.Join(want, "\n") {
		t.Errorf("the package doc's command list differs from the commands table; write it as:\n%s", commandList("//\t"))
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if !strings.Contains(string(readme), "| `usher "+c.name) {
			t.Errorf("the README's Commands table has no row for usher %s", c.name)
		}
	}
}

// TestREADMELayout keeps the README's Layout paragraph in step with the
// tree: every top-level folder and every internal/ package is named there.
func TestREADMELayout(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(readme), "\nLayout (")
	if i < 0 {
		t.Fatal("the README has no Layout paragraph")
	}
	layout := string(readme[i:])
	if j := strings.Index(layout, "\n\n#"); j > 0 {
		layout = layout[:j]
	}
	var dirs []string
	for _, parent := range []string{"../..", "../../internal"} {
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || e.Name() == "internal" || e.Name() == "scripts" {
				continue
			}
			name := e.Name()
			if parent != "../.." {
				name = "internal/" + name
			}
			dirs = append(dirs, name)
		}
	}
	for _, d := range dirs {
		if !strings.Contains(layout, "`"+d) {
			t.Errorf("the README's Layout paragraph does not name %s", d)
		}
	}
}
