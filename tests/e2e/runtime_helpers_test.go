package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

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
