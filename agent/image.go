package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/edge-serverless-box/esbnet/conf/agentconf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// Image pull policies (--image-pull-policy), as conf/agentconf names them.
const (
	PullIfNotPresent = agentconf.PullIfNotPresent
	PullAlways       = agentconf.PullAlways
)

// images is the agent's state of its images. Under always: one resolve
// per reference at a time, and the digest each reference named last.
// Under if-not-present: the references seen in the runtime's store, which
// a cold start does not ask about again (the check took 2 ms with Docker
// and 7 ms with containerd, in the path of every cold acquire); a create
// that finds one gone (shim.ErrImageAbsent) ensures it and creates again.
type images struct {
	flight  singleflight.Group
	mu      sync.Mutex
	digests map[string]string
	seen    map[string]bool
}

// isSeen reports whether ref was seen in the runtime's store.
func (m *images) isSeen(ref string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen[ref]
}

// see records (or, with false, forgets) that ref is in the store.
func (m *images) see(ref string, present bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = map[string]bool{}
	}
	if present {
		m.seen[ref] = true
	} else {
		delete(m.seen, ref)
	}
}

// createWithImage creates the worker's container, ensuring its image
// first unless the agent saw the image in the store before (see images).
func (c *creation) createWithImage(ctx context.Context) error {
	a, ref := c.a, c.r.Image
	remember := a.cfg.ImagePullPolicy != PullAlways // always resolves the tag on every cold start
	seen := remember && a.img.isSeen(ref)
	if !seen {
		if err := a.ensureImage(ctx, ref); err != nil {
			return a.pullErr(err, ref)
		}
	}
	err := c.create(ctx)
	if seen && errors.Is(err, shim.ErrImageAbsent) {
		a.img.see(ref, false)
		a.log.Info("image gone from the runtime's store; ensuring it again", "image", ref)
		if err := a.ensureImage(ctx, ref); err != nil {
			return a.pullErr(err, ref)
		}
		err = c.create(ctx)
	}
	if err == nil && remember {
		a.img.see(ref, true)
	}
	return err
}

// pullErr classifies a failed pull: an image the registry does not have
// is NotFound naming the image (the caller's mistake: retrying never
// helps), a registry that does not answer is Unavailable, and the rest is
// classified as any runtime failure.
func (a *Agent) pullErr(err error, image string) error {
	switch {
	case errors.Is(err, shim.ErrImageNotFound):
		return errf(NotFound, err, "image %s not found", image)
	case errors.Is(err, shim.ErrRegistryUnavailable):
		return errf(Unavailable, err, "image %s: its registry does not answer", image)
	}
	return a.runtimeErr(err, "pull image %s", image)
}

// ensureImage makes ref ready to run under the pull policy. With always,
// concurrent cold starts of one reference share one resolve; a new digest
// drains the reference's idle workers; a failed pull falls back to a local
// image with a warning (counted in esb_agent_image_pull_fallbacks_total).
func (a *Agent) ensureImage(ctx context.Context, ref string) error {
	br, _ := a.rt.(boundedRuntime)
	p, ok := br.Runtime.(shim.Puller)
	if a.cfg.ImagePullPolicy != PullAlways || !ok {
		return a.rt.EnsureImage(ctx, ref)
	}
	ch := a.img.flight.DoChan(ref, func() (any, error) {
		if err := a.rt.Ping(ctx); err != nil {
			return "", err
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pullFactor*a.cfg.RuntimeTimeout)
		defer cancel()
		return p.PullImage(pctx, ref)
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	if res.Err != nil {
		if errors.Is(res.Err, shim.ErrUnavailable) || !p.HasImage(ctx, ref) {
			return res.Err
		}
		a.log.Warn("pull failed; using the local image", "image", ref, "err", res.Err)
		a.metrics.pullFallback()
		return nil
	}
	a.noteDigest(ref, res.Val.(string))
	return nil
}

// noteDigest records what ref names now; when that changed, the idle
// workers of ref run old code and are drained.
func (a *Agent) noteDigest(ref, digest string) {
	a.img.mu.Lock()
	if a.img.digests == nil {
		a.img.digests = map[string]string{}
	}
	old := a.img.digests[ref]
	a.img.digests[ref] = digest
	a.img.mu.Unlock()
	if old == "" || old == digest {
		return
	}
	idle := a.table.idleOfImage(ref)
	a.log.Info("image changed; draining its idle workers", "image", ref, "old", old, "new", digest, "workers", len(idle))
	for _, id := range idle {
		if !a.claim(id) {
			continue // taken or gone meanwhile
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), a.cfg.StopGrace+time.Minute)
			defer cancel()
			if err := a.remove(ctx, id); err != nil {
				a.log.Warn(fmt.Sprintf("drain idle worker of %s", ref), "worker", id, "err", err)
			}
		}()
	}
}
