package dockertest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"

	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/docker"
	"github.com/edge-serverless-box/esbnet/shim/runtimetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// TestConformance runs shim.Runtime's conformance suite against the
// Docker adapter and the stack's dockerd.
func TestConformance(t *testing.T) {
	st := stacktest.RequireDocker(t)
	h := st.Harness()
	h.New = func(t *testing.T) runtimetest.Instance {
		rt, dc := newRuntime(t, st)
		return runtimetest.Instance{Runtime: rt,
			Kill: func(ctx context.Context, id string) error {
				return dc.ContainerKill(ctx, docker.ContainerName(id), "SIGKILL")
			},
			PID: func(ctx context.Context, id string) (int, error) {
				info, err := dc.ContainerInspect(ctx, docker.ContainerName(id))
				if err != nil {
					return 0, err
				}
				if info.State == nil || info.State.Pid <= 0 {
					return 0, fmt.Errorf("worker %s has no process: %+v", id, info.State)
				}
				return info.State.Pid, nil
			},
		}
	}
	h.Unavailable = map[string]func(t *testing.T) (shim.Runtime, error){
		"no socket": func(t *testing.T) (shim.Runtime, error) {
			return newUnavailable(t, "unix://"+filepath.Join(t.TempDir(), "nothing.sock"))
		},
		"stale socket": func(t *testing.T) (shim.Runtime, error) {
			// The file is there, nothing listens.
			stale := filepath.Join(t.TempDir(), "stale.sock")
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			return newUnavailable(t, "unix://"+stale)
		},
	}
	h.Capabilities = runtimetest.Capabilities{Confinement: true, Cgroups: true}
	runtimetest.RuntimeSuite(t, "docker", h)
}

func newUnavailable(t *testing.T, host string) (shim.Runtime, error) {
	rt, err := docker.New(docker.Options{Host: host})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt, nil
}
