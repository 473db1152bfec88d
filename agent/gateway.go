package agent

import (
	"context"
	"errors"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// The ESB Gateway's contract (github poruru-code/esb,
// services/contracts/proto/agent.proto): thin translations onto the
// agent's Acquire, Release, Pause, Resume, List, WorkerMetrics and Invoke.
// Errors name fields as the Gateway's messages spell them.

// Lambda's memory sizes, in MiB, for AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
const (
	MinLambdaMemoryMiB = 128
	MaxLambdaMemoryMiB = 10240
	// LambdaMemoryEnv sets a worker's memory limit in EnsureContainer.
	LambdaMemoryEnv = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
)

// Gateway status strings.
const (
	statusRunning = "RUNNING"
	statusPaused  = "PAUSED"
)

// gatewayFields renames our field names to the Gateway's.
var gatewayFields = map[string]string{"function": "function_name", "worker_id": "container_id"}

// gatewayStatus is toStatus with the Gateway's field names.
func gatewayStatus(err error) error {
	var e *Error
	if errors.As(err, &e) {
		if name, ok := gatewayFields[e.Field]; ok {
			c := *e
			c.Field = name
			err = &c
		}
	}
	return toStatus(err)
}

// lambdaMemory reads the worker's memory limit from env: 0 (the agent's
// default) when unset.
func lambdaMemory(env map[string]string) (int64, error) {
	v, ok := env[LambdaMemoryEnv]
	if !ok {
		return 0, nil
	}
	mib, err := strconv.Atoi(v)
	if err != nil || mib < MinLambdaMemoryMiB || mib > MaxLambdaMemoryMiB {
		return 0, invalid("env."+LambdaMemoryEnv, "%q must be an integer from %d to %d (MiB)", truncate(v), MinLambdaMemoryMiB, MaxLambdaMemoryMiB)
	}
	return int64(mib) << 20, nil
}

// EnsureContainer implements the Gateway's contract: a new worker on every
// call (the Gateway pools on its side; the warm pool may serve it).
func (s *Server) EnsureContainer(ctx context.Context, r *agentv1.EnsureContainerRequest) (*agentv1.WorkerInfo, error) {
	mem, err := lambdaMemory(r.GetEnv())
	if err != nil {
		return nil, toStatus(err)
	}
	w, err := s.a.Acquire(ctx, AcquireRequest{Function: r.GetFunctionName(), Image: r.GetImage(), Env: r.GetEnv(),
		Owner: r.GetOwnerId(), MemoryBytes: mem, LambdaName: true})
	if err != nil {
		return nil, gatewayStatus(err)
	}
	return &agentv1.WorkerInfo{Id: w.ID, Name: w.ID, IpAddress: w.IP.String(), Port: int32(w.Port)}, nil
}

// DestroyContainer implements the Gateway's contract: idempotent, so an
// unknown or gone worker is success; another owner's is PermissionDenied.
func (s *Server) DestroyContainer(ctx context.Context, r *agentv1.DestroyContainerRequest) (*agentv1.DestroyContainerResponse, error) {
	err := s.a.Release(ctx, r.GetContainerId(), r.GetOwnerId())
	if err != nil && CodeOf(err) != NotFound {
		return nil, gatewayStatus(err)
	}
	return &agentv1.DestroyContainerResponse{Success: true}, nil
}

// PauseContainer implements the Gateway's contract.
func (s *Server) PauseContainer(ctx context.Context, r *agentv1.PauseContainerRequest) (*agentv1.PauseContainerResponse, error) {
	if _, err := s.a.Pause(ctx, r.GetContainerId(), r.GetOwnerId()); err != nil {
		return nil, gatewayStatus(err)
	}
	return &agentv1.PauseContainerResponse{Success: true}, nil
}

// ResumeContainer implements the Gateway's contract.
func (s *Server) ResumeContainer(ctx context.Context, r *agentv1.ResumeContainerRequest) (*agentv1.ResumeContainerResponse, error) {
	if _, err := s.a.Resume(ctx, r.GetContainerId(), r.GetOwnerId()); err != nil {
		return nil, gatewayStatus(err)
	}
	return &agentv1.ResumeContainerResponse{Success: true}, nil
}

func gatewayState(w *Worker) string {
	if w.State == StatePaused {
		return statusPaused
	}
	return statusRunning
}

// handedAt is when w was handed to its owner (its creation for a worker
// recovered after a restart, whose hand-over time is not kept).
func handedAt(w *Worker) time.Time {
	if w.Handed.IsZero() {
		return w.Created
	}
	return w.Handed
}

// ListContainers implements the Gateway's contract: the owner's workers
// (every acquired worker for an empty owner_id on the unix socket), with
// created_at the time each was handed to its owner, in Unix seconds, so
// the Gateway's orphan reconcile does not take a pooled worker for an old
// one.
func (s *Server) ListContainers(ctx context.Context, r *agentv1.ListContainersRequest) (*agentv1.ListContainersResponse, error) {
	if err := validateID("owner_id", r.GetOwnerId(), !onUnixSocket(ctx)); err != nil {
		return nil, toStatus(err)
	}
	out := &agentv1.ListContainersResponse{}
	for _, w := range s.a.List(r.GetOwnerId()) {
		if w.State == StateIdle {
			continue // in the warm pool: no Gateway's container
		}
		created := handedAt(&w).Unix()
		used := created
		if !w.LastUsed.IsZero() {
			used = w.LastUsed.Unix()
		}
		out.Containers = append(out.Containers, &agentv1.ContainerState{ContainerId: w.ID, FunctionName: w.Function,
			Status: gatewayState(&w), LastUsedAt: used, ContainerName: w.ID, CreatedAt: created, OwnerId: w.Owner})
	}
	return out, nil
}

// GetContainerMetrics implements the Gateway's contract; a live worker has
// no exit code, exit time or restarts (0).
func (s *Server) GetContainerMetrics(ctx context.Context, r *agentv1.GetContainerMetricsRequest) (*agentv1.GetContainerMetricsResponse, error) {
	m, err := s.a.WorkerMetrics(ctx, r.GetContainerId(), r.GetOwnerId())
	if err != nil {
		return nil, gatewayStatus(err)
	}
	w, err := s.a.owned(r.GetContainerId(), r.GetOwnerId())
	if err != nil { // released meanwhile
		return nil, gatewayStatus(err)
	}
	c := s.a.table.snapshot(w)
	state, function := gatewayState(&c), c.Function
	return &agentv1.GetContainerMetricsResponse{Metrics: &agentv1.ContainerMetrics{
		ContainerId: r.GetContainerId(), FunctionName: function, ContainerName: r.GetContainerId(), State: state,
		MemoryCurrent: m.MemoryUsageBytes, MemoryMax: m.MemoryLimitBytes, OomEvents: m.OOMEvents,
		CpuUsageNs: m.CPUUsageNanos, CollectedAt: time.Now().Unix()}}, nil
}

// InvokeWorker implements the Gateway's contract (see Agent.Invoke).
func (s *Server) InvokeWorker(ctx context.Context, r *agentv1.InvokeWorkerRequest) (*agentv1.InvokeWorkerResponse, error) {
	if r.GetTimeoutMs() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid timeout_ms: %d must be 0 (30 s) or more", r.GetTimeoutMs())
	}
	resp, err := s.a.Invoke(ctx, r.GetContainerId(), r.GetOwnerId(), InvokeRequest{Path: r.GetPath(),
		Payload: r.GetPayload(), Headers: r.GetHeaders(), Timeout: time.Duration(r.GetTimeoutMs()) * time.Millisecond})
	if err != nil {
		return nil, gatewayStatus(err)
	}
	return &agentv1.InvokeWorkerResponse{StatusCode: int32(resp.Status), Headers: resp.Headers, Body: resp.Body}, nil
}
