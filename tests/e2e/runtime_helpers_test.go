package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim/docker"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// The runtimes the agent drives; the scenarios that matter to both run as
// one subtest per runtime (forRuntimes).
var runtimeNames = []string{stacktest.Containerd, stacktest.Docker}

// forRuntimes runs scenario once per runtime, each in its own env (node,
// directory, and containerd namespace or Docker esb.namespace label).
func forRuntimes(t *testing.T, scenario func(t *testing.T, e *env)) {
	t.Helper()
	for _, rt := range runtimeNames {
		t.Run(rt, func(t *testing.T) { scenario(t, newEnvFor(t, rt)) })
	}
}

// ownsNetNS says whether the runtime makes the worker's namespace (Docker)
// rather than joining the agent's pin (containerd).
func (e *env) ownsNetNS() bool { return e.rt == stacktest.Docker }

// runtimeFlags are the agent's flags for the env's runtime: its workers
// are scoped by the env's namespace name in both.
func (e *env) runtimeFlags() []string {
	if e.rt == stacktest.Docker {
		return []string{"-runtime", "docker", "-docker-host", e.stack.DockerHost(), "-docker-namespace", e.ctrNS}
	}
	return []string{"-runtime", "containerd", "-containerd-address", e.stack.ContainerdSock,
		"-containerd-namespace", e.ctrNS, "-snapshotter", e.stack.Snapshotter}
}

// dockerClient returns a client of the stack's dockerd, closed with the test.
func dockerClient(t *testing.T, st stacktest.Stack) *client.Client {
	t.Helper()
	dc, err := client.NewClientWithOpts(client.WithHost(st.DockerHost()), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dc.Close() })
	return dc
}

func cmdCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cmdTimeout)
}

// dockerWorkers lists the worker IDs of the env's Docker namespace.
func (e *env) dockerWorkers() ([]string, error) {
	ctx, cancel := cmdCtx()
	defer cancel()
	cs, err := e.dc.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", conf.LabelNamespace+"="+e.ctrNS))})
	if err != nil {
		return nil, fmt.Errorf("docker ps: %w", err)
	}
	var ids []string
	for _, c := range cs {
		for _, n := range c.Names {
			if id, ok := strings.CutPrefix(strings.TrimPrefix(n, "/"), "esb-"); ok {
				ids = append(ids, id)
			}
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (e *env) dockerInspect(id string) container.InspectResponse {
	e.t.Helper()
	ctx, cancel := cmdCtx()
	defer cancel()
	info, err := e.dc.ContainerInspect(ctx, docker.ContainerName(id))
	if err != nil {
		e.t.Fatalf("docker inspect %s: %v", id, err)
	}
	return info
}

// dockerStatus maps Docker's status to ctr's task STATUS words.
func dockerStatus(info container.InspectResponse) string {
	switch info.State.Status {
	case container.StateExited, container.StateDead, container.StateCreated:
		return "STOPPED"
	}
	return strings.ToUpper(string(info.State.Status))
}

func (e *env) dockerLabels(id string) map[string]string {
	return e.dockerInspect(id).Config.Labels
}

// removeDockerWorker removes a worker container as an operator's docker rm
// -f would.
func (e *env) removeDockerWorker(id string) error {
	ctx, cancel := cmdCtx()
	defer cancel()
	err := e.dc.ContainerRemove(ctx, docker.ContainerName(id), container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker rm -f %s: %w", id, err)
	}
	return nil
}

// killWorker kills the worker's process behind the agent's back: docker
// kill, or ctr task kill -s SIGKILL.
func (e *env) killWorker(id string) {
	e.t.Helper()
	if e.rt == stacktest.Docker {
		ctx, cancel := cmdCtx()
		defer cancel()
		if err := e.dc.ContainerKill(ctx, docker.ContainerName(id), "SIGKILL"); err != nil {
			e.t.Fatalf("docker kill %s: %v", id, err)
		}
		return
	}
	e.ctr("tasks", "kill", "--signal", "SIGKILL", id)
}

// --- containerd, through ctr ---------------------------------------------------

// ctrOut runs ctr in the test's containerd namespace.
func (e *env) ctrOut(args ...string) (string, error) {
	defer since("cmd (ctr)", cmdTimeout, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := e.stack.Ctr(ctx, e.ctrNS, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ctr runs ctr in the test's containerd namespace, failing the test when
// it fails.
func (e *env) ctr(args ...string) string {
	e.t.Helper()
	out, err := e.ctrOut(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// containers lists the IDs of the containers in the test's namespace.
func (e *env) containers() ([]string, error) {
	if e.rt == stacktest.Docker {
		return e.dockerWorkers()
	}
	out, err := e.ctrOut("containers", "list", "-q")
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	slices.Sort(ids)
	return ids, nil
}

// taskStatus returns the STATUS column of ctr tasks list for id ("" when
// it has no task).
func (e *env) taskStatus(id string) string {
	e.t.Helper()
	if e.rt == stacktest.Docker {
		return dockerStatus(e.dockerInspect(id))
	}
	sc := bufio.NewScanner(strings.NewReader(e.ctr("tasks", "list")))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// containerLabels returns the labels of container id.
func (e *env) containerLabels(id string) map[string]string {
	e.t.Helper()
	if e.rt == stacktest.Docker {
		return e.dockerLabels(id)
	}
	var info struct{ Labels map[string]string }
	if err := json.Unmarshal([]byte(e.ctr("containers", "info", id)), &info); err != nil {
		e.t.Fatalf("decode ctr containers info %s: %v", id, err)
	}
	return info.Labels
}

// removeContainer kills and deletes a worker container behind the agent's
// back, as an operator's ctr would.
func (e *env) removeContainer(id string) {
	e.t.Helper()
	if err := removeContainer(e, id); err != nil {
		e.t.Fatal(err)
	}
}

func removeContainer(e *env, id string) error {
	if e.rt == stacktest.Docker {
		return e.removeDockerWorker(id)
	}
	var errs []error
	if out, err := e.ctrOut("tasks", "kill", "--signal", "SIGKILL", id); err != nil && !strings.Contains(out, "not found") {
		errs = append(errs, err)
	}
	start := time.Now()
	defer since("settle (task delete)", settleTimeout, start)
	deadline := start.Add(settleTimeout)
	for {
		out, err := e.ctrOut("tasks", "delete", "--force", id)
		if err == nil || strings.Contains(out, "not found") {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, err)
			break
		}
		time.Sleep(pollInterval)
	}
	if out, err := e.ctrOut("containers", "delete", id); err != nil && !strings.Contains(out, "not found") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
