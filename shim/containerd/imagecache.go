package containerd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// imageCache keeps, per image name and the content it points at, what
// every container of that image shares: containerd's image handle, which
// remembers the layers' diff IDs (the new snapshot's parent), and the
// process that oci.WithImageConfig makes of the image's configuration
// (entrypoint, environment, working directory, user and the supplementary
// groups it reads from the image's /etc/passwd and /etc/group).
//
// containerd's client does that work again for every container: it reads
// the manifest and the configuration from the content store twice, and
// mounts the new container's rootfs in the calling process to read
// /etc/group (issue 17: 5 of a 21 ms container create here, and a mount
// and unmount in the host's mount table per cold start). containerd's CRI
// keeps the same per image in its image store. The name is still resolved
// on every create (GetImage), so a tag moved to other content gets an
// entry of its own, and a removed image is still seen as absent.
type imageCache struct {
	mu      sync.Mutex
	entries map[string]*imageEntry // "name@digest"
}

// imageCacheMax bounds the cache: past it, entries make way at random
// (Go's map order), which costs one container create the uncached path.
const imageCacheMax = 64

type imageEntry struct {
	img client.Image

	mu sync.Mutex
	// in is the process as it stood before the image's configuration was
	// applied (the default spec's), out what the configuration made of
	// it; nil until a first container of the image was specified.
	in  []byte
	out []byte
}

// entry returns the cache's entry for img (the handle GetImage just
// returned), making one when the name or its content is new.
func (c *imageCache) entry(img client.Image) *imageEntry {
	key := img.Name() + "@" + img.Target().Digest.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		return e
	}
	if c.entries == nil {
		c.entries = map[string]*imageEntry{}
	}
	for k := range c.entries {
		if len(c.entries) < imageCacheMax {
			break
		}
		delete(c.entries, k)
	}
	e := &imageEntry{img: img}
	c.entries[key] = e
	return e
}

// withConfig is oci.WithImageConfig(e.img), answered from the cache when
// the spec's process is the one the cached answer was made from (the
// default spec's, as it is when this is the first spec option); any other
// process takes containerd's own path.
func (e *imageEntry) withConfig() oci.SpecOpts {
	return func(ctx context.Context, cl oci.Client, c *containers.Container, s *oci.Spec) error {
		in, err := json.Marshal(s.Process)
		if err != nil {
			return fmt.Errorf("image config: encode process: %w", err)
		}
		e.mu.Lock()
		hit := e.out != nil && bytes.Equal(in, e.in)
		out := e.out
		e.mu.Unlock()
		if hit {
			var p specs.Process
			if err := json.Unmarshal(out, &p); err != nil {
				return fmt.Errorf("image config: decode cached process: %w", err)
			}
			s.Process = &p
			return nil
		}
		if err := oci.WithImageConfig(e.img)(ctx, cl, c, s); err != nil {
			return err
		}
		if out, err = json.Marshal(s.Process); err == nil {
			e.mu.Lock()
			e.in, e.out = in, out
			e.mu.Unlock()
		}
		return nil
	}
}
