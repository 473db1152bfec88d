package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// journal records the workers being created, one empty file each in
// <dir>/creating, so that after a crash the next agent knows which
// half-made workers (a pinned namespace not yet attached, a container not
// yet started) were its own. A zero journal (no dir) records nothing.
type journal struct{ dir string }

func (j journal) path(id string) string { return filepath.Join(j.dir, "creating", id) }

// begin records that id is being created.
func (j journal) begin(id string) error {
	if j.dir == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(j.dir, "creating"), 0o700); err != nil {
		return fmt.Errorf("create the agent's state dir: %w", err)
	}
	f, err := os.OpenFile(j.path(id), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal the creation of %s: %w", id, err)
	}
	return f.Close()
}

// end forgets id's creation (made, or undone).
func (j journal) end(id string) error {
	if j.dir == "" {
		return nil
	}
	if err := os.Remove(j.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal the end of %s: %w", id, err)
	}
	return nil
}

// list returns the creations recorded.
func (j journal) list() ([]string, error) {
	if j.dir == "" {
		return nil, nil
	}
	ids, err := entries(filepath.Join(j.dir, "creating"), func(e fs.DirEntry) bool { return !strings.HasPrefix(e.Name(), ".") })
	if err != nil {
		return nil, fmt.Errorf("read the agent's journal: %w", err)
	}
	return ids, nil
}

// entries are the names of dir's entries that keep accepts; a dir that
// does not exist has none.
func entries(dir string, keep func(fs.DirEntry) bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if keep(e) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
