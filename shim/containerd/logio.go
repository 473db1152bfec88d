package containerd

import (
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/cio"
)

// logFile sends a worker's stdout and stderr to the file at path, both
// appended to it, through two names of that one file.
//
// containerd's own cio.LogFile gives the shim one path for both streams:
// the shim then copies them into one shared descriptor, and the stdout
// copy closes it when stdout ends, so stderr a worker writes just before
// it exits could be lost (the last line of a failed start: 4 exits in 20
// here, containerd 1.6.20; the shim of containerd 2.4 copies the same
// way). Given two regular files (not FIFOs) under its default scheme, the
// shim opens each with O_APPEND and closes each after its own stream;
// "dir/./name" names the same file, so both streams still append to one
// log. The file must exist beforehand (the shim checks whether it is a
// FIFO).
func logFile(path string) cio.Creator {
	return func(string) (cio.IO, error) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		return logIO{cfg: cio.Config{Stdout: path, Stderr: filepath.Dir(path) + "/./" + filepath.Base(path)}}, nil
	}
}

// logIO is the cio.IO of logFile: the shim does the copying, so there is
// nothing to wait for or close on the agent's side.
type logIO struct{ cfg cio.Config }

func (l logIO) Config() cio.Config { return l.cfg }
func (logIO) Cancel()              {}
func (logIO) Wait()                {}
func (logIO) Close() error         { return nil }
