package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// namedImage is a client.Image of which the cache reads only the name and
// the target; any other method panics (the embedded interface is nil).
type namedImage struct {
	client.Image
	name   string
	target digest.Digest
}

func (i namedImage) Name() string { return i.name }
func (i namedImage) Target() ocispec.Descriptor {
	return ocispec.Descriptor{Digest: i.target}
}

func image(name, content string) namedImage {
	return namedImage{name: name, target: digest.FromString(content)}
}

// TestImageCacheKeys: one entry per name and content, a new one when the
// name points at other content, and never more than imageCacheMax.
func TestImageCacheKeys(t *testing.T) {
	var c imageCache
	a := c.entry(image("r/fn:1", "a"))
	if c.entry(image("r/fn:1", "a")) != a {
		t.Error("the same name and content got a second entry")
	}
	if c.entry(image("r/fn:1", "b")) == a {
		t.Error("the name moved to other content and kept its entry")
	}
	if c.entry(image("r/other:1", "a")) == a {
		t.Error("another name of the same content shares the entry (its containers would carry the first name)")
	}
	for i := range 3 * imageCacheMax {
		c.entry(image(fmt.Sprintf("r/fn:%d", i), "c"))
	}
	if n := len(c.entries); n > imageCacheMax {
		t.Errorf("%d entries, want at most %d", n, imageCacheMax)
	}
}

// TestImageCacheProcessGuard: a remembered process is used only for a
// spec whose process is the one it was made from; the returned process is
// a copy the caller may change.
func TestImageCacheProcessGuard(t *testing.T) {
	e := &imageEntry{img: image("r/fn:1", "a")}
	def := &specs.Process{Env: []string{"PATH=/bin"}, Cwd: "/"}
	made := &specs.Process{Env: []string{"PATH=/bin", "FROM_IMAGE=1"}, Args: []string{"/fn"}, Cwd: "/srv"}
	e.in, e.out = mustJSON(t, def), mustJSON(t, made)

	s := &oci.Spec{Process: &specs.Process{Env: []string{"PATH=/bin"}, Cwd: "/"}}
	if err := e.withConfig()(context.Background(), nil, &containers.Container{}, s); err != nil {
		t.Fatal(err)
	}
	if s.Process.Cwd != "/srv" || len(s.Process.Args) != 1 || s.Process.Args[0] != "/fn" {
		t.Fatalf("default process: got %+v, want the remembered %+v", s.Process, made)
	}
	s.Process.Env[1] = "CHANGED=1"
	again := &oci.Spec{Process: &specs.Process{Env: []string{"PATH=/bin"}, Cwd: "/"}}
	if err := e.withConfig()(context.Background(), nil, &containers.Container{}, again); err != nil {
		t.Fatal(err)
	}
	if again.Process.Env[1] != "FROM_IMAGE=1" {
		t.Errorf("a caller's change reached the cache: env %q", again.Process.Env)
	}

	// Another starting process takes containerd's path, which reads the
	// image (namedImage panics there): the cached answer is not used.
	other := &oci.Spec{Process: &specs.Process{Env: []string{"PATH=/usr/bin"}, Cwd: "/"}}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("a spec with another process was answered from the cache")
			}
		}()
		_ = e.withConfig()(context.Background(), nil, &containers.Container{}, other)
	}()
}

func mustJSON(t *testing.T, p *specs.Process) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
