package repocheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// maxFuncLines: a function a reader can take in at once (STYLE.md).
const maxFuncLines = 80

// longFuncs are the functions allowed past maxFuncLines, each with why. The
// list may only shrink: a new long function fails the test, and so does an
// entry that is no longer long (remove it).
var longFuncs = map[string]string{
	// Byte-level parsers of untrusted input: one loop over the bytes whose
	// states share locals; each is fuzzed against net/http's reading of the
	// same bytes (FuzzParseRequestHead, FuzzChunkedReader).
	"proxy/internal/h1/parse.go:ParseRequestHead":          "one pass over a request head",
	"proxy/internal/h1/parse.go:(*ChunkedReader).FeedData": "chunked-encoding state machine",
	// Test stand-ins: one switch over record or query types each.
	"internal/cfemu/records.go:build":                "Cloudflare record types",
	"internal/dnsserver/handler.go:(*Server).answer": "DNS query types",
}

// TestFunctionLength: no function in non-test code is longer than
// maxFuncLines lines, except those listed in longFuncs.
func TestFunctionLength(t *testing.T) {
	top := root(t)
	var long []string
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != top && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(top, path)
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			name := filepath.ToSlash(rel) + ":" + funcName(fd)
			if n > maxFuncLines {
				long = append(long, name)
				if _, ok := longFuncs[name]; !ok {
					t.Errorf("%s is %d lines long (at most %d): split it, or add it to longFuncs with a reason", name, n, maxFuncLines)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range longFuncs {
		if !slices.Contains(long, name) {
			t.Errorf("%s is listed in longFuncs but is no longer than %d lines (or is gone): remove it from the list", name, maxFuncLines)
		}
	}
}

// funcName is "f" or "(*T).m" / "(T).m".
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	var recv string
	switch x := fd.Recv.List[0].Type.(type) {
	case *ast.StarExpr:
		recv = "*" + typeName(x.X)
	default:
		recv = typeName(x)
	}
	return fmt.Sprintf("(%s).%s", recv, fd.Name.Name)
}

func typeName(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.IndexExpr:
		return typeName(x.X)
	case *ast.IndexListExpr:
		return typeName(x.X)
	}
	return "?"
}
