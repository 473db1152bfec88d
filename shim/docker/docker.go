// Package docker is the shim's Docker Engine adapter: workers are Docker
// containers with networking disabled (network mode "none" and the API's
// NetworkDisabled), so runc gives each worker a network namespace of its
// own with only lo up, dockerd makes no network sandbox for it, and the
// agent pins that namespace and attaches the esb network to it after
// Start; Docker's own networks, bridge and iptables rules are never used
// or touched.
//
// NetworkDisabled is what makes a Docker start fast here: for network mode
// "none" alone dockerd still builds a libnetwork sandbox, with a prestart
// hook that execs dockerd's own binary (libnetwork-setkey) inside runc's
// create. Without it a container's start took 190 ms p50 instead of 458
// (docs/performance.md).
//
// The client negotiates the API version, so Docker 20.10 (API 1.41) and
// later work. Docker has no namespaces: the adapter scopes its workers with
// the label esb.namespace (Options.Namespace), so several agents or test
// runs can share one dockerd. Docker labels cannot change after create:
// SetLabels returns shim.ErrImmutable.
//
// A worker's output goes to Docker's json-file log (docker logs, or the
// file under the daemon's data root), not to WorkerSpec.LogPath.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// namePrefix starts every worker container's name: "esb-<worker ID>".
const namePrefix = "esb-"

// ContainerName is the Docker container name of the worker id (for docker
// CLI commands against a worker).
func ContainerName(id string) string { return namePrefix + id }

// Options configure the adapter.
type Options struct {
	// Host is dockerd's address, e.g. "unix:///run/docker.sock".
	Host string
	// Namespace is the value of the esb.namespace label of the workers
	// (default "esb").
	Namespace string
}

// Runtime implements shim.Runtime on Docker Engine.
type Runtime struct {
	c    *client.Client
	opts Options
}

var (
	_ shim.Runtime = (*Runtime)(nil)
	_ shim.Puller  = (*Runtime)(nil)
)

// New makes a client for dockerd at o.Host. It does not connect: when the
// daemon is down, calls return errors wrapping shim.ErrUnavailable.
func New(o Options) (*Runtime, error) {
	if o.Namespace == "" {
		o.Namespace = "esb"
	}
	if o.Host == "" {
		return nil, errors.New("docker host is empty")
	}
	c, err := client.NewClientWithOpts(client.WithHost(o.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", o.Host, err)
	}
	return &Runtime{c: c, opts: o}, nil
}

// Close closes the client's idle connections.
func (r *Runtime) Close() error { return r.c.Close() }

// wrap marks connection failures as shim.ErrUnavailable and missing
// containers or images as shim.ErrNotFound.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case cerrdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", msg, shim.ErrNotFound, err)
	case client.IsErrConnectionFailed(err) || cerrdefs.IsUnavailable(err):
		return fmt.Errorf("%s: %w: %w", msg, shim.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// Name implements shim.Runtime.
func (r *Runtime) Name() string { return "docker" }

// OwnsNetNS implements shim.Runtime: runc makes the worker's namespace as
// the container starts (Start returns it; the agent pins it).
func (r *Runtime) OwnsNetNS() bool { return true }

// Ping implements shim.Runtime.
func (r *Runtime) Ping(ctx context.Context) error {
	_, err := r.c.Ping(ctx)
	return wrap(err, "ping dockerd at %s", r.opts.Host)
}

// EnsureImage implements shim.Runtime: an image dockerd has is used as it
// is; otherwise dockerd pulls it (plain HTTP is dockerd's decision: it
// allows it for 127.0.0.0/8 and its insecure-registries).
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	_, err := r.c.ImageInspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return wrap(err, "inspect image %s", ref)
	}
	_, err = r.PullImage(ctx, ref)
	return err
}

// HasImage implements shim.Puller.
func (r *Runtime) HasImage(ctx context.Context, ref string) bool {
	_, err := r.c.ImageInspect(ctx, ref)
	return err == nil
}

// PullImage implements shim.Puller: dockerd asks the registry and fetches
// what changed; the digest is the image ID the tag names afterwards.
func (r *Runtime) PullImage(ctx context.Context, ref string) (string, error) {
	rc, err := r.c.ImagePull(ctx, ref, image.PullOptions{})
	if err == nil {
		err = readPull(rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		if client.IsErrConnectionFailed(err) {
			return "", wrap(err, "pull %s", ref)
		}
		// dockerd fetches from the registry itself: a refused connection
		// there is the registry's, not dockerd's.
		if perr := r.Ping(ctx); perr != nil {
			return "", perr
		}
		return "", shim.PullError(ref, err)
	}
	info, err := r.c.ImageInspect(ctx, ref)
	if err != nil {
		return "", wrap(err, "inspect image %s", ref)
	}
	return info.ID, nil
}

// readPull drains a pull's progress stream and returns the error it
// reports, if any: dockerd answers 200 and puts later failures in the
// stream.
func readPull(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read pull progress: %w", err)
		}
		switch {
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return errors.New(m.ErrorDetail.Message)
		case m.Error != "":
			return errors.New(m.Error)
		}
	}
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// Create implements shim.Runtime: a container named esb-<ID> with
// networking disabled (network mode "none", NetworkDisabled), the memory
// and CPU limits, no-new-privileges, shim.WorkerCapabilities and Docker's
// default seccomp profile (Docker applies it to every container not given
// another), a read-only root file system when spec.ReadOnlyRootfs is set,
// logging to json-file.
// spec.NetNS and spec.LogPath are not used (runc makes the namespace and
// Docker keeps the log).
func (r *Runtime) Create(ctx context.Context, s shim.WorkerSpec) error {
	labels := make(map[string]string, len(s.Labels)+1)
	for k, v := range s.Labels {
		labels[k] = v
	}
	labels[conf.LabelNamespace] = r.opts.Namespace
	cfg := &container.Config{
		Image:           s.Image,
		Env:             envList(s.Env),
		Labels:          labels,
		Hostname:        shim.WorkerHostname(s.ID),
		NetworkDisabled: true,
	}
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode("none"),
		SecurityOpt: []string{"no-new-privileges"},
		CapDrop:     []string{"ALL"},
		CapAdd:      shim.WorkerCapabilities,
		LogConfig:   container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "2"}},
		Resources: container.Resources{
			Memory:   s.MemoryBytes,
			NanoCPUs: s.CPUMillis * 1_000_000,
		},
	}
	if s.ReadOnlyRootfs {
		host.ReadonlyRootfs = true
		host.Tmpfs = map[string]string{shim.WorkerTmpfsPath: shim.WorkerTmpfsOptions}
	}
	// With networking disabled dockerd makes no /etc/resolv.conf or
	// /etc/hosts of its own (the files of its init layer stay empty).
	for _, f := range s.EtcFiles() {
		host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeBind, Source: f.Source, Target: f.Path, ReadOnly: true})
	}
	if _, err := r.c.ContainerCreate(ctx, cfg, host, nil, nil, ContainerName(s.ID)); err != nil {
		if cerrdefs.IsNotFound(err) { // "No such image"
			return fmt.Errorf("create container %s: %w: %w", s.ID, shim.ErrImageAbsent, err)
		}
		return wrap(err, "create container %s", s.ID)
	}
	return nil
}

// Start implements shim.Runtime. The namespace it returns is the worker's
// process's, /proc/<pid>/ns/net, valid as long as the process runs: the
// agent pins it at once, before it attaches the network (a pid recycled
// in the milliseconds between the inspect and the pin would need the
// worker to exit and the kernel to wrap its pids in between).
func (r *Runtime) Start(ctx context.Context, id string) (string, error) {
	name := ContainerName(id)
	if err := r.c.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
		return "", wrap(err, "start container %s", id)
	}
	info, err := r.c.ContainerInspect(ctx, name)
	if err != nil {
		return "", wrap(err, "inspect container %s", id)
	}
	key := netnsOf(info)
	if key == "" {
		st := "unknown"
		if info.ContainerJSONBase != nil && info.State != nil {
			st = fmt.Sprintf("%s, exit code %d", info.State.Status, info.State.ExitCode)
		}
		return "", fmt.Errorf("start container %s: it has no network namespace (state %s)", id, st)
	}
	return key, nil
}

// netnsOf returns the namespace of the container's process while it runs
// or is paused, else "".
func netnsOf(info container.InspectResponse) string {
	if info.ContainerJSONBase == nil || info.State == nil || info.State.Pid <= 0 {
		return ""
	}
	if !info.State.Running && !info.State.Paused {
		return ""
	}
	return fmt.Sprintf("/proc/%d/ns/net", info.State.Pid)
}

// graceSeconds turns a grace period into Docker's whole seconds, rounding
// up so the worker never gets less than asked; 0 or less is 0 (killed at
// once).
func graceSeconds(grace time.Duration) int {
	if grace <= 0 {
		return 0
	}
	s := math.Ceil(grace.Seconds())
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(s)
}

// Stop implements shim.Runtime: the stop signal (SIGTERM unless the image
// says otherwise), then SIGKILL after grace, rounded up to whole seconds.
// dockerd resumes a paused worker to deliver the signal.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	t := graceSeconds(grace)
	err := r.c.ContainerStop(ctx, ContainerName(id), container.StopOptions{Timeout: &t})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	return wrap(err, "stop container %s", id)
}

// Delete implements shim.Runtime: the container (killed if it still runs)
// and its anonymous volumes.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	err := r.c.ContainerRemove(ctx, ContainerName(id), container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	return wrap(err, "remove container %s", id)
}

// Pause implements shim.Runtime (the cgroup freezer).
func (r *Runtime) Pause(ctx context.Context, id string) error {
	return wrap(r.c.ContainerPause(ctx, ContainerName(id)), "pause %s", id)
}

// Resume implements shim.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	return wrap(r.c.ContainerUnpause(ctx, ContainerName(id)), "resume %s", id)
}

// Metrics implements shim.Runtime from one sample of the stats API (no
// wait for a second sample) and, for OOMEvents, the container's OOMKilled
// flag (0 or 1: Docker does not count).
func (r *Runtime) Metrics(ctx context.Context, id string) (shim.Metrics, error) {
	name := ContainerName(id)
	var m shim.Metrics
	info, err := r.c.ContainerInspect(ctx, name)
	if err != nil {
		return m, wrap(err, "inspect container %s", id)
	}
	resp, err := r.c.ContainerStatsOneShot(ctx, name)
	if err != nil {
		return m, wrap(err, "stats of %s", id)
	}
	m, err = decodeStats(resp.Body)
	if cerr := resp.Body.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close stats of %s: %w", id, cerr)
	}
	if err != nil {
		return shim.Metrics{}, fmt.Errorf("stats of %s: %w", id, err)
	}
	if info.ContainerJSONBase != nil && info.State != nil && info.State.OOMKilled {
		m.OOMEvents = 1
	}
	return m, nil
}

func decodeStats(r io.Reader) (shim.Metrics, error) {
	var st container.StatsResponse
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return shim.Metrics{}, fmt.Errorf("decode: %w", err)
	}
	return shim.Metrics{
		MemoryUsageBytes: st.MemoryStats.Usage,
		MemoryLimitBytes: st.MemoryStats.Limit,
		CPUUsageNanos:    st.CPUStats.CPUUsage.TotalUsage,
		Pids:             st.PidsStats.Current,
	}, nil
}

// SetLabels implements shim.Runtime: Docker cannot change a container's
// labels, so it returns shim.ErrImmutable (after checking that the worker
// exists: a missing one is shim.ErrNotFound).
func (r *Runtime) SetLabels(ctx context.Context, id string, _ map[string]string) error {
	if _, err := r.c.ContainerInspect(ctx, ContainerName(id)); err != nil {
		return wrap(err, "inspect container %s", id)
	}
	return fmt.Errorf("set labels of %s: %w", id, shim.ErrImmutable)
}

// List implements shim.Runtime: the containers labelled esb.worker=1 in
// this adapter's namespace, each inspected for its state, creation time and
// namespace. A container removed while listing is left out.
func (r *Runtime) List(ctx context.Context) ([]shim.WorkerInfo, error) {
	cs, err := r.c.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", conf.LabelWorker+"=1"),
		filters.Arg("label", conf.LabelNamespace+"="+r.opts.Namespace),
	)})
	if err != nil {
		return nil, wrap(err, "list containers")
	}
	out := make([]shim.WorkerInfo, 0, len(cs))
	for _, c := range cs {
		id, ok := workerID(c.Names)
		if !ok {
			continue // labelled by someone else, not named by us
		}
		info, err := r.c.ContainerInspect(ctx, c.ID)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				continue
			}
			return nil, wrap(err, "inspect container %s", id)
		}
		w := shim.WorkerInfo{ID: id, Labels: c.Labels, Image: c.Image, State: shim.StateUnknown,
			Created: time.Unix(c.Created, 0), NetNS: netnsOf(info)}
		if info.Config != nil {
			w.Labels, w.Image = info.Config.Labels, info.Config.Image
		}
		if info.ContainerJSONBase != nil {
			if t, err := time.Parse(time.RFC3339Nano, info.Created); err == nil {
				w.Created = t
			}
			if info.State != nil {
				w.State = stateOf(info.State.Status)
			}
		}
		out = append(out, w)
	}
	return out, nil
}

// workerID returns the worker ID in a container's names ("/esb-<id>").
func workerID(names []string) (string, bool) {
	for _, n := range names {
		n = strings.TrimPrefix(n, "/")
		if id, ok := strings.CutPrefix(n, namePrefix); ok && id != "" && !strings.Contains(id, "/") {
			return id, true
		}
	}
	return "", false
}

// stateOf maps Docker's container status to shim.State.
func stateOf(status container.ContainerState) shim.State {
	switch status {
	case container.StateCreated:
		return shim.StateCreated
	case container.StateRunning:
		return shim.StateRunning
	case container.StatePaused:
		return shim.StatePaused
	case container.StateExited, container.StateDead, container.StateRemoving:
		return shim.StateStopped
	}
	return shim.StateUnknown // restarting, or a status this adapter does not know
}

// Events implements shim.Runtime with dockerd's event stream, filtered
// there on this adapter's labels: "die" is EventExit, "destroy" is
// EventDelete.
func (r *Runtime) Events(ctx context.Context) (<-chan shim.Event, <-chan error) {
	out, errc := make(chan shim.Event), make(chan error, 1)
	msgs, errs := r.c.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionDestroy)),
		filters.Arg("label", conf.LabelWorker+"=1"),
		filters.Arg("label", conf.LabelNamespace+"="+r.opts.Namespace),
	)})
	go func() {
		defer close(out)
		for {
			select {
			case m := <-msgs:
				ev, ok := eventOf(m)
				if !ok {
					continue
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					errc <- nil
					return
				}
			case err := <-errs:
				if ctx.Err() != nil {
					err = nil
				} else if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("docker event stream ended: %w", shim.ErrUnavailable)
				} else {
					err = wrap(err, "docker event stream")
				}
				errc <- err
				return
			}
		}
	}()
	return out, errc
}

// eventOf maps a container event of dockerd to a worker event.
func eventOf(m events.Message) (shim.Event, bool) {
	id, ok := workerID([]string{m.Actor.Attributes["name"]})
	if !ok {
		return shim.Event{}, false
	}
	switch m.Action {
	case events.ActionDie:
		return shim.Event{ID: id, Kind: shim.EventExit}, true
	case events.ActionDestroy:
		return shim.Event{ID: id, Kind: shim.EventDelete}, true
	}
	return shim.Event{}, false
}
