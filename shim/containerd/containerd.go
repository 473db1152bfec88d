// Package containerd is the shim's containerd adapter: workers are
// containerd containers (runc) whose OCI spec joins the network namespace
// the shim pinned and attached before the task starts, so the network is
// up before the function's first instruction.
package containerd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	apievents "github.com/containerd/containerd/api/events"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// Options configure the adapter.
type Options struct {
	// Address is containerd's socket.
	Address string
	// Namespace is the containerd namespace of the workers (default "esb").
	Namespace string
	// PlainHTTP lists registries (host:port) pulled from over plain HTTP;
	// every other registry needs HTTPS.
	PlainHTTP []string
	// Snapshotter is the snapshotter to use ("" is containerd's default).
	Snapshotter string
	// RuncBinary is the runc that the runc v2 shim runs for the workers
	// (its BinaryName option; "" is runc on containerd's PATH).
	RuncBinary string
}

// Runtime implements shim.Runtime on containerd.
type Runtime struct {
	c      *client.Client
	opts   Options
	images imageCache
	// leases are Create's leases still being deleted (createLease).
	leases sync.WaitGroup
	// groups holds a shim group's task creations and deletions in turn.
	groups groupLocks
}

var (
	_ shim.Runtime = (*Runtime)(nil)
	_ shim.Puller  = (*Runtime)(nil)
)

// New connects to containerd. It does not fail when the daemon is down:
// calls then return errors wrapping shim.ErrUnavailable.
func New(o Options) (*Runtime, error) {
	if o.Namespace == "" {
		o.Namespace = "esb"
	}
	c, err := client.New(o.Address, client.WithDefaultNamespace(o.Namespace), client.WithTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w: %w", o.Address, shim.ErrUnavailable, err)
	}
	return &Runtime{c: c, opts: o}, nil
}

// Close closes the connection.
func (r *Runtime) Close() error {
	r.leases.Wait()
	return r.c.Close()
}

func (r *Runtime) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.opts.Namespace)
}

// wrap marks connection failures as shim.ErrUnavailable and missing
// objects as shim.ErrNotFound.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%s: %w: %w", msg, shim.ErrNotFound, err)
	case errdefs.IsUnavailable(err) || status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no such file or directory"):
		return fmt.Errorf("%s: %w: %w", msg, shim.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// Name implements shim.Runtime.
func (r *Runtime) Name() string { return "containerd" }

// OwnsNetNS implements shim.Runtime: containerd joins the shim's namespace.
func (r *Runtime) OwnsNetNS() bool { return false }

// Ping implements shim.Runtime.
func (r *Runtime) Ping(ctx context.Context) error {
	_, err := r.c.Version(r.ctx(ctx))
	return wrap(err, "containerd version")
}

// EnsureImage implements shim.Runtime: an image already present and
// unpacked is used as it is.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	if r.HasImage(ctx, ref) {
		return nil
	}
	_, err := r.PullImage(ctx, ref)
	return err
}

// HasImage implements shim.Puller: present and unpacked.
func (r *Runtime) HasImage(ctx context.Context, ref string) bool {
	ctx = r.ctx(ctx)
	img, err := r.c.GetImage(ctx, ref)
	if err != nil {
		return false
	}
	ok, err := img.IsUnpacked(ctx, r.opts.Snapshotter)
	return err == nil && ok
}

// PullImage implements shim.Puller: containerd fetches only the content
// it lacks.
func (r *Runtime) PullImage(ctx context.Context, ref string) (string, error) {
	ctx = r.ctx(ctx)
	plain := r.opts.PlainHTTP
	hosts := config.ConfigureHosts(ctx, config.HostOptions{})
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: func(host string) ([]docker.RegistryHost, error) {
		hs, err := hosts(host)
		if err != nil {
			return nil, err
		}
		for i := range hs {
			if slices.Contains(plain, host) {
				hs[i].Scheme = "http"
				continue
			}
			// containerd falls back to plain HTTP for localhost on its
			// own; only registries named in PlainHTTP may use it.
			hs[i].Scheme = "https"
			hs[i].Client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment,
				TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
		}
		return hs, nil
	}})
	opts := []client.RemoteOpt{client.WithPullUnpack, client.WithResolver(resolver)}
	if r.opts.Snapshotter != "" {
		opts = append(opts, client.WithPullSnapshotter(r.opts.Snapshotter))
	}
	img, err := r.c.Pull(ctx, ref, opts...)
	if err != nil {
		// The client fetches from the registry itself: a refused
		// connection there is the registry's, not containerd's.
		if perr := r.Ping(ctx); perr != nil {
			return "", perr
		}
		return "", shim.PullError(ref, err)
	}
	return img.Target().Digest.String(), nil
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// ShimGroupAnnotation is the OCI annotation by which containerd's runc v2
// shim serves the containers that carry the same value from one process
// (CRI puts a pod's containers in one shim through its sandbox-id
// annotation, the shim's other grouping key).
const ShimGroupAnnotation = "io.containerd.runc.v2.group"

// Create implements shim.Runtime. The spec joins spec.NetNS, limits memory
// and CPU, sets no-new-privileges, shim.WorkerCapabilities and containerd's
// default seccomp profile (the one its CRI plugin uses), and mounts the
// root file system read-only when spec.ReadOnlyRootfs is set.
func (r *Runtime) Create(ctx context.Context, s shim.WorkerSpec) error {
	ctx = r.ctx(ctx)
	lease := r.createLease(ctx)
	defer r.dropLease(lease)
	got, err := r.c.GetImage(ctx, s.Image)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("image %s: %w: %w", s.Image, shim.ErrImageAbsent, err)
	}
	if err != nil {
		return wrap(err, "image %s", s.Image)
	}
	cached := r.images.entry(got)
	img := cached.img
	specOpts := []oci.SpecOpts{
		cached.withConfig(), // first: it starts from the default spec's process
		oci.WithEnv(envList(s.Env)),
		oci.WithHostname(shim.WorkerHostname(s.ID)),
		oci.WithNoNewPrivileges,
		oci.WithCgroup(r.cgroupPath(s.ID)),
		oci.WithCapabilities(shim.WorkerCapabilities),
		seccomp.WithDefaultProfile(),
	}
	if s.ReadOnlyRootfs {
		specOpts = append(specOpts, oci.WithRootFSReadonly(), oci.WithMounts([]specs.Mount{{
			Destination: shim.WorkerTmpfsPath, Type: "tmpfs", Source: "tmpfs",
			Options: strings.Split(shim.WorkerTmpfsOptions, ","),
		}}))
	}
	for _, f := range s.EtcFiles() {
		specOpts = append(specOpts, oci.WithMounts([]specs.Mount{{
			Destination: f.Path, Type: "bind", Source: f.Source,
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		}}))
	}
	if s.NetNS != "" {
		specOpts = append(specOpts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNS}))
	}
	if s.ShimGroup != "" {
		specOpts = append(specOpts, oci.WithAnnotations(map[string]string{ShimGroupAnnotation: s.ShimGroup}))
	}
	if s.MemoryBytes > 0 {
		specOpts = append(specOpts, oci.WithMemoryLimit(uint64(s.MemoryBytes)))
	}
	if s.CPUMillis > 0 {
		const period = 100000
		specOpts = append(specOpts, oci.WithCPUCFS(s.CPUMillis*period/1000, period))
	}
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	if s.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o750); err != nil {
			return fmt.Errorf("create log dir of %s: %w", s.ID, err)
		}
		labels[labelLog] = s.LogPath
	}
	if s.ShimGroup != "" {
		labels[conf.LabelShimGroup] = s.ShimGroup // for lockGroup
	}
	opts := []client.NewContainerOpts{
		client.WithImage(img),
		client.WithContainerLabels(labels),
	}
	if r.opts.Snapshotter != "" {
		opts = append(opts, client.WithSnapshotter(r.opts.Snapshotter))
	}
	if r.opts.RuncBinary != "" {
		opts = append(opts, client.WithRuntime(defaults.DefaultRuntime, &runcoptions.Options{BinaryName: r.opts.RuncBinary}))
	}
	opts = append(opts, client.WithNewSnapshot(s.ID, img), client.WithNewSpec(specOpts...))
	l := lease()
	if l.err != nil {
		return wrap(l.err, "lease for container %s", s.ID)
	}
	if _, err := r.c.NewContainer(l.ctx, s.ID, opts...); err != nil {
		if errdefs.IsNotFound(err) { // the image's unpacked layers are gone: the parent snapshot is missing
			return fmt.Errorf("create container %s: image %s is not unpacked: %w: %w", s.ID, s.Image, shim.ErrImageAbsent, err)
		}
		return wrap(err, "create container %s", s.ID)
	}
	return nil
}

// leased is a lease made for one Create: its context, how to delete it.
type leased struct {
	ctx  context.Context
	done func(context.Context) error
	err  error
}

// createLease starts making the lease that containerd's client would make
// inside NewContainer, which keeps the new snapshot from the garbage
// collector until the container refers to it. The client makes it before
// and deletes it after, inside the call: two bbolt commits, 3.6 ms of a
// container create here. Create makes it beside GetImage and the spec, and
// dropLease deletes it after Create has returned; NewContainer, given a
// context that holds a lease, makes none of its own.
func (r *Runtime) createLease(ctx context.Context) func() leased {
	ch := make(chan leased, 1)
	go func() {
		lctx, done, err := r.c.WithLease(ctx)
		ch <- leased{lctx, done, err}
	}()
	return sync.OnceValue(func() leased { return <-ch })
}

// dropLease deletes a lease of createLease's once it is made, off the
// caller's path, within leaseDropTimeout; Close waits for it. One that
// cannot be deleted expires after a day (the client's default).
func (r *Runtime) dropLease(lease func() leased) {
	r.leases.Go(func() {
		if l := lease(); l.err == nil {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), leaseDropTimeout)
			defer cancel()
			_ = l.done(ctx)
		}
	})
}

// leaseDropTimeout bounds dropLease's delete, so that Close does not wait
// for a containerd that stopped answering.
const leaseDropTimeout = 10 * time.Second

// CreateTask implements shim.TaskCreator: the task of the container
// (its shim, and runc's container with its process waiting to be
// started), whose output goes to the log file.
func (r *Runtime) CreateTask(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return wrap(err, "load container %s", id)
	}
	_, err = r.newTask(ctx, c)
	return err
}

func (r *Runtime) newTask(ctx context.Context, c client.Container) (client.Task, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return nil, wrap(err, "container %s", c.ID())
	}
	logPath := info.Labels[labelLog]
	creator := cio.NullIO
	if logPath != "" {
		creator = logFile(logPath)
	}
	unlock := r.groups.lock(info.Labels[conf.LabelShimGroup])
	task, err := c.NewTask(ctx, creator)
	unlock()
	if err != nil {
		return nil, wrap(err, "create task of %s", c.ID())
	}
	return task, nil
}

// Start implements shim.Runtime: the task CreateTask made, or a new one.
func (r *Runtime) Start(ctx context.Context, id string) (string, error) {
	ctx = r.ctx(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return "", wrap(err, "load container %s", id)
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		task, err = r.newTask(ctx, c)
	}
	if err != nil {
		return "", wrap(err, "task of %s", id)
	}
	if err := task.Start(ctx); err != nil {
		derr := r.deleteTask(ctx, c, task, client.WithProcessKill)
		return "", wrap(errors.Join(err, derr), "start task of %s", id)
	}
	spec, err := c.Spec(ctx)
	if err != nil {
		return "", wrap(err, "spec of %s", id)
	}
	return netnsOf(spec), nil
}

// labelLog carries the worker's log path from Create to Start.
const labelLog = "esb.log"

func netnsOf(s *oci.Spec) string {
	if s == nil || s.Linux == nil {
		return ""
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			return n.Path
		}
	}
	return ""
}

// Stop implements shim.Runtime: SIGTERM, then SIGKILL after grace, then
// the task is deleted.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	ctx = r.ctx(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap(err, "load container %s", id)
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return wrap(err, "task of %s", id)
	}
	status, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		return nil // deleted since it was loaded (WaitExit deletes an ended task)
	}
	if err != nil {
		return wrap(err, "status of %s", id)
	}
	if status.Status == client.Paused {
		if err := task.Resume(ctx); err != nil {
			return wrap(err, "resume %s to stop it", id)
		}
	}
	if status.Status != client.Stopped {
		exit, err := task.Wait(ctx)
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return wrap(err, "wait for %s", id)
		}
		sig := syscall.SIGTERM
		if grace <= 0 {
			sig = syscall.SIGKILL
		}
		if err := task.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
			return wrap(err, "signal %s", id)
		}
		select {
		case <-exit:
		case <-time.After(grace):
			if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
				return wrap(err, "kill %s", id)
			}
			<-exit
		case <-ctx.Done():
			return wrap(ctx.Err(), "stop %s", id)
		}
	}
	if err := r.deleteTask(ctx, c, task); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "delete task of %s", id)
	}
	return nil
}

// Delete implements shim.Runtime: the container and its snapshot, and
// what a creation interrupted half-way leaves without a container (its
// snapshot, runc's empty cgroups).
func (r *Runtime) Delete(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return r.removeLeftovers(ctx, id)
	}
	if err != nil {
		return wrap(err, "load container %s", id)
	}
	if task, err := c.Task(ctx, nil); err == nil {
		if err := r.deleteTask(ctx, c, task, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return wrap(err, "delete task of %s", id)
		}
	}
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return wrap(err, "delete container %s", id)
	}
	return r.removeLeftovers(ctx, id)
}

// removeLeftovers removes the snapshot of id (made before the container,
// so a creation stopped between the two leaves it) and the cgroups runc
// made for it at cgroupPath (left when a task's creation was cut off),
// killing a leftover `runc init` in them first. An error leaves the
// caller's journal entry in place, so the sweep tries again.
func (r *Runtime) removeLeftovers(ctx context.Context, id string) error {
	var errs []error
	sn := r.opts.Snapshotter
	if sn == "" {
		sn = defaults.DefaultSnapshotter
	}
	if err := r.c.SnapshotService(sn).Remove(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, wrap(err, "remove snapshot %s", id))
	}
	if err := removeCgroup(ctx, cgroupRoot, r.cgroupPath(id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Runtime) task(ctx context.Context, id string) (client.Task, error) {
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return nil, wrap(err, "load container %s", id)
	}
	t, err := c.Task(ctx, nil)
	return t, wrap(err, "task of %s", id)
}

// Pause implements shim.Runtime (the cgroup freezer).
func (r *Runtime) Pause(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	t, err := r.task(ctx, id)
	if err != nil {
		return err
	}
	return wrap(t.Pause(ctx), "pause %s", id)
}

// Resume implements shim.Runtime.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	ctx = r.ctx(ctx)
	t, err := r.task(ctx, id)
	if err != nil {
		return err
	}
	return wrap(t.Resume(ctx), "resume %s", id)
}

// Metrics implements shim.Runtime from the task's cgroup v1 statistics.
func (r *Runtime) Metrics(ctx context.Context, id string) (shim.Metrics, error) {
	ctx = r.ctx(ctx)
	var m shim.Metrics
	t, err := r.task(ctx, id)
	if err != nil {
		return m, err
	}
	raw, err := t.Metrics(ctx)
	if err != nil {
		return m, wrap(err, "metrics of %s", id)
	}
	v, err := typeurl.UnmarshalAny(raw.Data)
	if err != nil {
		return m, fmt.Errorf("decode metrics of %s: %w", id, err)
	}
	st, ok := v.(*cgroup1stats.Metrics)
	if !ok {
		return m, fmt.Errorf("metrics of %s: unexpected type %T (this adapter reads cgroup v1)", id, v)
	}
	if st.Memory != nil && st.Memory.Usage != nil {
		m.MemoryUsageBytes, m.MemoryLimitBytes = st.Memory.Usage.Usage, st.Memory.Usage.Limit
	}
	if st.CPU != nil && st.CPU.Usage != nil {
		m.CPUUsageNanos = st.CPU.Usage.Total
	}
	if st.MemoryOomControl != nil {
		m.OOMEvents = st.MemoryOomControl.OomKill
	}
	if st.Pids != nil {
		m.Pids = st.Pids.Current
	}
	return m, nil
}

// SetLabels implements shim.Runtime.
func (r *Runtime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	ctx = r.ctx(ctx)
	c, err := r.c.LoadContainer(ctx, id)
	if err != nil {
		return wrap(err, "load container %s", id)
	}
	_, err = c.SetLabels(ctx, labels)
	return wrap(err, "set labels of %s", id)
}

// List implements shim.Runtime.
func (r *Runtime) List(ctx context.Context) ([]shim.WorkerInfo, error) {
	ctx = r.ctx(ctx)
	cs, err := r.c.Containers(ctx, fmt.Sprintf(`labels.%q==1`, conf.LabelWorker))
	if err != nil {
		return nil, wrap(err, "list containers")
	}
	out := make([]shim.WorkerInfo, 0, len(cs))
	for _, c := range cs {
		info, err := c.Info(ctx)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue
			}
			return nil, wrap(err, "container %s", c.ID())
		}
		w := shim.WorkerInfo{ID: c.ID(), Labels: info.Labels, Image: info.Image, Created: info.CreatedAt, State: shim.StateCreated}
		if t, err := c.Task(ctx, nil); err == nil {
			if st, err := t.Status(ctx); err == nil {
				switch st.Status {
				case client.Running:
					w.State = shim.StateRunning
				case client.Paused, client.Pausing:
					w.State = shim.StatePaused
				case client.Stopped:
					w.State = shim.StateStopped
				}
			}
		}
		if spec, err := c.Spec(ctx); err == nil {
			w.NetNS = netnsOf(spec)
		}
		out = append(out, w)
	}
	return out, nil
}

// Events implements shim.Runtime with containerd's event service: the
// exits of init processes (/tasks/exit) and container deletions
// (/containers/delete) in the adapter's namespace.
func (r *Runtime) Events(ctx context.Context) (<-chan shim.Event, <-chan error) {
	out, errc := make(chan shim.Event), make(chan error, 1)
	envs, errs := r.c.Subscribe(ctx,
		fmt.Sprintf(`namespace==%q,topic=="/tasks/exit"`, r.opts.Namespace),
		fmt.Sprintf(`namespace==%q,topic=="/containers/delete"`, r.opts.Namespace))
	go func() {
		defer close(out)
		for {
			select {
			case env := <-envs:
				if env == nil {
					continue
				}
				ev, ok := eventOf(env.Event)
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
				switch {
				case ctx.Err() != nil:
					err = nil
				case err == nil:
					err = fmt.Errorf("containerd event stream ended: %w", shim.ErrUnavailable)
				default:
					err = wrap(err, "containerd event stream")
				}
				errc <- err
				return
			}
		}
	}()
	return out, errc
}

// eventOf maps a containerd event to a worker event; exits of exec'd
// processes (ID other than the container's) are not the worker's.
func eventOf(a typeurl.Any) (shim.Event, bool) {
	if a == nil {
		return shim.Event{}, false
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return shim.Event{}, false
	}
	switch e := v.(type) {
	case *apievents.TaskExit:
		if e.ID != "" && e.ID != e.ContainerID {
			return shim.Event{}, false
		}
		return shim.Event{ID: e.ContainerID, Kind: shim.EventExit}, true
	case *apievents.ContainerDelete:
		return shim.Event{ID: e.ID, Kind: shim.EventDelete}, true
	}
	return shim.Event{}, false
}
