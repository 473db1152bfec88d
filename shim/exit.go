package shim

import (
	"bytes"
	"io"
	"os"
	"strings"
)

// Exit is how a worker's process ended, or why its runtime cannot say.
type Exit struct {
	// Code is the process's exit status (128+N: killed by signal N).
	Code int
	// Stopped is set when the runtime was told to end the process (a
	// kill through dockerd, as dockerd does to its containers when it
	// shuts down) before it ended: the end is then not the image's doing.
	Stopped bool
	// Signal is the last signal of such a kill ("15"), when known.
	Signal string
	// Log holds the last ExitLogLines lines the worker wrote (empty when
	// Stopped).
	Log string
	// Err is set when the runtime stopped answering before the process
	// ended; the other fields then mean nothing.
	Err error
}

// ExitLogLines is how many lines of a worker's log an Exit carries.
const ExitLogLines = 20

// TailLines returns the last n lines of b.
func TailLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TailFile returns the last n lines of the file at path (reading at most
// its last 64 KiB); "" when it cannot be read.
func TailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	const most = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > most {
		_, _ = f.Seek(fi.Size()-most, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, most))
	if i := bytes.IndexByte(b, '\n'); i >= 0 && len(b) == most {
		b = b[i+1:] // a partial first line
	}
	return TailLines(b, n)
}
