package agent

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// Server is the gRPC face of an Agent.
type Server struct {
	agentv1.UnimplementedAgentServiceServer
	a *Agent
}

// NewServer returns the gRPC service of a.
func NewServer(a *Agent) *Server { return &Server{a: a} }

var grpcCodes = map[Code]codes.Code{
	Internal: codes.Internal, Invalid: codes.InvalidArgument, NotFound: codes.NotFound,
	Permission: codes.PermissionDenied, Unavailable: codes.Unavailable, Exhausted: codes.ResourceExhausted,
	NotReady: codes.DeadlineExceeded, Precondition: codes.FailedPrecondition,
}

// toStatus turns an agent error into a gRPC status with the right code.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(grpcCodes[CodeOf(err)], err.Error())
}

func toProto(w *Worker) *agentv1.Worker {
	st := map[State]agentv1.WorkerState{StateIdle: agentv1.WorkerState_WORKER_STATE_IDLE,
		StateBusy: agentv1.WorkerState_WORKER_STATE_BUSY, StatePaused: agentv1.WorkerState_WORKER_STATE_PAUSED}[w.State]
	return &agentv1.Worker{Id: w.ID, Function: w.Function, OwnerId: w.Owner, Image: w.Image, Ip: w.IP.String(),
		Port: int32(w.Port), State: st, Warm: w.Warm, CreatedUnixMs: w.Created.UnixMilli()}
}

// AcquireWorker implements the API.
func (s *Server) AcquireWorker(ctx context.Context, r *agentv1.AcquireWorkerRequest) (*agentv1.AcquireWorkerResponse, error) {
	q := AcquireRequest{Function: r.GetFunction(), Image: r.GetImage(), Env: r.GetEnv(), Owner: r.GetOwnerId(),
		MemoryBytes: r.GetLimits().GetMemoryBytes(), CPUMillis: r.GetLimits().GetCpuMillis(), RequestID: r.GetRequestId()}
	w, err := s.a.Acquire(ctx, q)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.AcquireWorkerResponse{Worker: toProto(w)}, nil
}

// ReleaseWorker implements the API.
func (s *Server) ReleaseWorker(ctx context.Context, r *agentv1.ReleaseWorkerRequest) (*agentv1.ReleaseWorkerResponse, error) {
	if err := s.a.Release(ctx, r.GetWorkerId(), r.GetOwnerId()); err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.ReleaseWorkerResponse{}, nil
}

// onUnixSocket reports whether the call came over the unix socket, whose
// mode 0600 admits only the node's operator.
func onUnixSocket(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	return ok && p.Addr != nil && p.Addr.Network() == "unix"
}

// ListWorkers implements the API: every worker for an empty owner_id on
// the unix socket; over TCP owner_id is required.
func (s *Server) ListWorkers(ctx context.Context, r *agentv1.ListWorkersRequest) (*agentv1.ListWorkersResponse, error) {
	if err := validateID("owner_id", r.GetOwnerId(), !onUnixSocket(ctx)); err != nil {
		return nil, toStatus(err)
	}
	out := &agentv1.ListWorkersResponse{}
	for _, w := range s.a.List(r.GetOwnerId()) {
		out.Workers = append(out.Workers, toProto(&w))
	}
	return out, nil
}

// PauseWorker implements the API.
func (s *Server) PauseWorker(ctx context.Context, r *agentv1.PauseWorkerRequest) (*agentv1.PauseWorkerResponse, error) {
	w, err := s.a.Pause(ctx, r.GetWorkerId(), r.GetOwnerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.PauseWorkerResponse{Worker: toProto(w)}, nil
}

// ResumeWorker implements the API.
func (s *Server) ResumeWorker(ctx context.Context, r *agentv1.ResumeWorkerRequest) (*agentv1.ResumeWorkerResponse, error) {
	w, err := s.a.Resume(ctx, r.GetWorkerId(), r.GetOwnerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.ResumeWorkerResponse{Worker: toProto(w)}, nil
}

// WorkerMetrics implements the API.
func (s *Server) WorkerMetrics(ctx context.Context, r *agentv1.WorkerMetricsRequest) (*agentv1.WorkerMetricsResponse, error) {
	m, err := s.a.WorkerMetrics(ctx, r.GetWorkerId(), r.GetOwnerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.WorkerMetricsResponse{WorkerId: r.GetWorkerId(), MemoryUsageBytes: m.MemoryUsageBytes,
		MemoryLimitBytes: m.MemoryLimitBytes, CpuUsageNanos: m.CPUUsageNanos, OomEvents: m.OOMEvents, Pids: m.Pids}, nil
}
