package engine

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSansIO proves from the source what the package doc promises: the
// engine imports no networking, file or locking package, starts no
// goroutine and never reads the clock or sleeps.
func TestSansIO(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, p := range sansIOProblems(fset, f) {
			t.Error(p)
		}
	}
	if checked < 5 {
		t.Fatalf("checked only %d files; run from the package directory", checked)
	}
}

// TestSansIOCheckerCatches makes sure the checker finds each kind of
// violation, so that TestSansIO passing means something.
func TestSansIOCheckerCatches(t *testing.T) {
	src := `package x
import (
	"net"
	_ "net/http"
	"os"
	"sync"
	clock "time"
)
func f() {
	go func() {}()
	_ = clock.Now()
	_ = clock.Since(clock.Time{})
	_ = clock.Until(clock.Time{})
	clock.Sleep(1)
	<-clock.After(1)
	clock.NewTimer(1)
	_ = clock.Duration(1) // allowed
	var _ net.Conn
	var _ sync.Mutex
	_ = os.Args
}`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(sansIOProblems(fset, f), "\n")
	for _, want := range []string{`"net"`, `"net/http"`, `"os"`, `"sync"`, "go statement",
		"clock.Now", "clock.Since", "clock.Until", "clock.Sleep", "clock.After", "clock.NewTimer"} {
		if !strings.Contains(got, want) {
			t.Errorf("checker missed %s; it found:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Duration") {
		t.Errorf("checker flagged time.Duration:\n%s", got)
	}
}

// sansIOProblems lists the forbidden imports, go statements and clock
// reads in f.
func sansIOProblems(fset *token.FileSet, f *ast.File) []string {
	forbiddenImports := []string{"net", "os", "sync", "syscall", "unsafe"}
	forbiddenTime := map[string]bool{
		"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
		"AfterFunc": true, "NewTimer": true, "NewTicker": true, "Tick": true,
	}
	var problems []string
	timeName := ""
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		for _, bad := range forbiddenImports {
			if path == bad || strings.HasPrefix(path, bad+"/") {
				problems = append(problems, fset.Position(imp.Pos()).String()+": imports "+strconv.Quote(path))
			}
		}
		if path == "time" {
			timeName = "time"
			if imp.Name != nil {
				timeName = imp.Name.Name
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			problems = append(problems, fset.Position(n.Pos()).String()+": go statement")
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && timeName != "" && id.Name == timeName && forbiddenTime[n.Sel.Name] {
				problems = append(problems, fset.Position(n.Pos()).String()+": "+id.Name+"."+n.Sel.Name)
			}
		}
		return true
	})
	return problems
}
