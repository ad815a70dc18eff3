package docs_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// regions returns the snippets of a Go source: the lines between
// "// snippet: NAME" and "// end", dedented by the marker's indentation.
func regions(t *testing.T, src string) map[string]string {
	t.Helper()
	out := map[string]string{}
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimLeft(lines[i], "\t")
		name, ok := strings.CutPrefix(trimmed, "// snippet: ")
		if !ok {
			continue
		}
		indent := lines[i][:len(lines[i])-len(trimmed)]
		var body []string
		for i++; i < len(lines) && strings.TrimLeft(lines[i], "\t") != "// end"; i++ {
			body = append(body, strings.TrimPrefix(lines[i], indent))
		}
		if i == len(lines) {
			t.Fatalf("snippet %q has no // end", name)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("snippet %q defined twice", name)
		}
		out[name] = strings.TrimRight(strings.Join(body, "\n"), "\n")
	}
	return out
}

// guideBlock matches a snippet marker and the fenced block after it.
var guideBlock = regexp.MustCompile("(?s)<!-- snippet: ([a-z0-9-]+) -->\n```go\n(.*?)\n```")

// TestMigratingSnippets checks that every Go block of MIGRATING.md is a
// compiled region of migrating_test.go, shown exactly, and that every
// region is shown.
func TestMigratingSnippets(t *testing.T) {
	guide, err := os.ReadFile("MIGRATING.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("migrating_test.go")
	if err != nil {
		t.Fatal(err)
	}
	code := regions(t, string(src))
	if len(code) == 0 {
		t.Fatal("no snippets in migrating_test.go")
	}
	shown := map[string]bool{}
	for _, m := range guideBlock.FindAllStringSubmatch(string(guide), -1) {
		name, block := m[1], m[2]
		want, ok := code[name]
		switch {
		case !ok:
			t.Errorf("MIGRATING.md shows snippet %q, which migrating_test.go does not have", name)
		case block != want:
			t.Errorf("MIGRATING.md snippet %q differs from the compiled code:\n--- guide\n%s\n--- code\n%s", name, block, want)
		}
		shown[name] = true
	}
	for name := range code {
		if !shown[name] {
			t.Errorf("snippet %q of migrating_test.go is not in MIGRATING.md", name)
		}
	}
	// A Go block without a marker would not be compiled.
	if n, marked := strings.Count(string(guide), "```go\n"), len(guideBlock.FindAllString(string(guide), -1)); n != marked {
		t.Errorf("MIGRATING.md has %d Go blocks, %d of them marked as snippets: mark every one", n, marked)
	}
}
