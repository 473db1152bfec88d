package shimfake_test

import (
	"context"
	"testing"

	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/runtimetest"
	"github.com/edge-serverless-box/esbnet/shim/shimfake"
)

const (
	image       = "127.0.0.1:5000/esb/worker:latest"
	missing     = "127.0.0.1:5000/esb/missing:latest"
	unreachable = "127.0.0.1:1/esb/worker:latest"
)

func instance(f *shimfake.Runtime) runtimetest.Instance {
	f.SetImageError(missing, shim.ErrImageNotFound)
	f.SetImageError(unreachable, shim.ErrRegistryUnavailable)
	return runtimetest.Instance{Runtime: f,
		Kill: func(_ context.Context, id string) error { f.Kill(id); return nil }}
}

// TestConformance proves the fake against the suite the containerd and
// Docker adapters pass, in both of their shapes.
func TestConformance(t *testing.T) {
	for name, o := range map[string]shimfake.Options{
		"containerd-like": {},
		"docker-like":     {OwnsNetNS: true, ImmutableLabels: true},
	} {
		runtimetest.RuntimeSuite(t, name, runtimetest.Harness{
			New: func(*testing.T) runtimetest.Instance { return instance(shimfake.New(o)) },
			Unavailable: map[string]func(*testing.T) (shim.Runtime, error){"down": func(*testing.T) (shim.Runtime, error) {
				f := shimfake.New(o)
				f.SetDown(true)
				return f, nil
			}},
			Image: image, MissingImages: []string{missing}, UnreachableImage: unreachable,
			Capabilities: runtimetest.Capabilities{MutableLabels: !o.ImmutableLabels},
		})
	}
}
