package agent

import (
	"context"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// workerEtc holds each worker's own /etc files in <dir>/etc/<id>: its
// hosts (the loopback names, then its own name and address) and its
// hostname, as containerd's CRI keeps them per pod and Docker per
// container. A zero workerEtc (no dir) writes none: the workers keep their
// images' files.
type workerEtc struct{ dir string }

func (e workerEtc) dirOf(id string) string      { return filepath.Join(e.dir, "etc", id) }
func (e workerEtc) path(id, name string) string { return filepath.Join(e.dirOf(id), name) }

// files are the paths of worker id's hosts and hostname, for its spec;
// none from a zero workerEtc.
func (e workerEtc) files(id string) (hosts, hostname string) {
	if e.dir == "" {
		return "", ""
	}
	return e.path(id, "hosts"), e.path(id, "hostname")
}

// write makes worker id's files before its container or task is created
// (the runtime bind-mounts them): its hosts names only the loopback until
// name adds its address.
func (e workerEtc) write(id string) error {
	if e.dir == "" {
		return nil
	}
	if err := os.MkdirAll(e.dirOf(id), 0o755); err != nil {
		return fmt.Errorf("make the worker's /etc files: %w", err)
	}
	for name, content := range map[string]string{"hosts": conf.WorkerHosts, "hostname": shim.WorkerHostname(id) + "\n"} {
		if err := os.WriteFile(e.path(id, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write the worker's /etc/%s: %w", name, err)
		}
	}
	return nil
}

// name adds worker id's address to its hosts, once the network's ADD gave
// it. It appends in place, one write: the file is the one its container
// has mounted (Docker's worker may already run and read it).
func (e workerEtc) name(id string, ip netip.Addr) error {
	if e.dir == "" {
		return nil
	}
	f, err := os.OpenFile(e.path(id, "hosts"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("name the worker in its /etc/hosts: %w", err)
	}
	_, err = f.WriteString(conf.WorkerHostsLine(ip, shim.WorkerHostname(id)))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("name the worker in its /etc/hosts: %w", err)
	}
	return nil
}

// remove deletes worker id's files; none is success.
func (e workerEtc) remove(id string) error {
	if e.dir == "" || id == "" {
		return nil
	}
	if err := os.RemoveAll(e.dirOf(id)); err != nil {
		return fmt.Errorf("remove the worker's /etc files: %w", err)
	}
	return nil
}

// list returns the workers that have files.
func (e workerEtc) list() ([]string, error) {
	if e.dir == "" {
		return nil, nil
	}
	ids, err := entries(filepath.Join(e.dir, "etc"), fs.DirEntry.IsDir)
	if err != nil {
		return nil, fmt.Errorf("list the workers' /etc files: %w", err)
	}
	return ids, nil
}

// writeEtc writes the worker's own /etc files, which its container mounts.
func (c *creation) writeEtc() error {
	c.cleanup("remove /etc files", func(context.Context) error { return c.a.etc.remove(c.w.ID) })
	if err := c.a.etc.write(c.w.ID); err != nil {
		return errf(Internal, err, "create worker")
	}
	return nil
}
