package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// maxFileLines bounds every hand-written file of the package, tests
// included (issue 16: the agent split by responsibility); golangci-lint's
// funlen bounds its functions.
const maxFileLines = 350

func TestFilesStaySmall(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no Go files found in the package directory")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(b, []byte("\n")); n > maxFileLines {
			t.Errorf("%s has %d lines, more than %d: split it by responsibility", f, n, maxFileLines)
		}
	}
}
