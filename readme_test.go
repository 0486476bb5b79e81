package herald_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's Go code is the body of examples that go test compiles and
// runs, so it cannot stop compiling or working unnoticed, with the imports
// that body uses. Each snippet follows a marker naming its example:
//
//	<!-- example: client/example_test.go Example -->
func TestREADMEShowsTheExamples(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("<!-- example: (\\S+) (\\S+) -->\\s*```go\\n((?s:.*?))```").FindAllStringSubmatch(string(b), -1)
	if len(blocks) < 3 {
		t.Fatalf("README.md has %d example snippets; want the node, the client and the token", len(blocks))
	}
	for _, m := range blocks {
		file, fn, shown := m[1], m[2], m[3]
		want, err := exampleBody(file, fn)
		if err != nil {
			t.Errorf("README.md names %s %s: %v", file, fn, err)
			continue
		}
		if shown != want {
			t.Errorf("README.md's snippet of %s %s differs from the example; it should read:\n%s", file, fn, want)
		}
	}
}

// exampleBody returns the imports the named function uses, then its
// statements one tab of indentation less, without the Output comment go
// test compares.
func exampleBody(file, fn string) (string, error) {
	src, err := os.ReadFile(filepath.FromSlash(file))
	if err != nil {
		return "", err
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		return "", err
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || fd.Recv != nil {
			continue
		}
		body := string(src[fset.Position(fd.Body.Lbrace).Offset+1 : fset.Position(fd.Body.Rbrace).Offset])
		body, _, _ = strings.Cut(body, "\t// Output:")
		var out strings.Builder
		out.WriteString(importsUsed(f, fd))
		for _, line := range strings.Split(strings.Trim(body, "\n"), "\n") {
			out.WriteString(strings.TrimPrefix(line, "\t") + "\n")
		}
		return out.String(), nil
	}
	return "", os.ErrNotExist
}

// importsUsed prints the import declaration of the packages fd refers to,
// standard library first, as gofmt groups them.
func importsUsed(f *ast.File, fd *ast.FuncDecl) string {
	used := map[string]bool{}
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				used[id.Name] = true
			}
		}
		return true
	})
	var std, other []string
	for _, spec := range f.Imports {
		path := strings.Trim(spec.Path.Value, `"`)
		name := pathName(path)
		if spec.Name != nil {
			name = spec.Name.Name
		}
		if !used[name] {
			continue
		}
		if strings.Contains(strings.SplitN(path, "/", 2)[0], ".") {
			other = append(other, spec.Path.Value)
		} else {
			std = append(std, spec.Path.Value)
		}
	}
	var b strings.Builder
	b.WriteString("import (\n")
	for _, p := range std {
		b.WriteString("\t" + p + "\n")
	}
	if len(std) > 0 && len(other) > 0 {
		b.WriteString("\n")
	}
	for _, p := range other {
		b.WriteString("\t" + p + "\n")
	}
	b.WriteString(")\n\n")
	return b.String()
}

// pathName is the name a package is imported by when the import does not
// give one: the last element of its path, skipping a major version.
func pathName(path string) string {
	parts := strings.Split(path, "/")
	last := parts[len(parts)-1]
	if len(parts) > 1 && regexp.MustCompile(`^v[0-9]+$`).MatchString(last) {
		last = parts[len(parts)-2]
	}
	return last
}
