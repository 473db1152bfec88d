package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/conf"
)

const agentUsage = `Usage (all take -network N, default esb, or -socket PATH, default the network's:
/run/esb/agent.sock for esb, /run/esb/N/agent.sock for N; -owner ID, -o text|json):
  esbctl acquire -function NAME -image REF [-env K=V ...] [-memory BYTES] [-cpu MILLIS] [-request-id ID]
  esbctl release ID
  esbctl ls                    the owner's workers (every worker without -owner)
  esbctl pause ID | resume ID
  esbctl metrics ID
  esbctl invoke ID [PAYLOAD]   POST PAYLOAD (default {}) to the worker's Lambda invoke path
  esbctl status                the agent's health and worker counts
`

type envFlag map[string]string

func (e envFlag) String() string { return fmt.Sprint(map[string]string(e)) }
func (e envFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	e[k] = v
	return nil
}

type agentCmd struct {
	socket, owner, out string
	stdout             io.Writer
}

func (c *agentCmd) dial() (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// explain turns a gRPC error into what the operator should do.
func explain(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	hint := map[codes.Code]string{
		codes.Unavailable:       " (is esb-agent running, and is its runtime up? check -socket)",
		codes.PermissionDenied:  " (pass the worker's owner with -owner)",
		codes.NotFound:          " (list workers with: esbctl ls)",
		codes.ResourceExhausted: " (release workers, or raise the agent's -max-workers)",
		codes.DeadlineExceeded:  " (the worker did not start listening; see its log: containerd, under the agent's -log-dir; Docker, docker logs esb-<id>)",
	}[st.Code()]
	return fmt.Errorf("%s: %s%s", st.Code(), st.Message(), hint)
}

func agentMain(name string, args []string, stdout, stderr io.Writer) error {
	c := &agentCmd{stdout: stdout}
	fs := flag.NewFlagSet("esbctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, agentUsage) }
	fs.StringVar(&c.socket, "socket", "", "esb-agent's unix socket (default: the network's, /run/esb/agent.sock for esb)")
	network := fs.String("network", conf.NetworkName, "the stack (network name) whose agent to call")
	fs.StringVar(&c.owner, "owner", "", "owner ID the call acts for (required but for ls and status; ls without it lists every worker)")
	fs.StringVar(&c.out, "o", "text", "output: text or json")
	function := fs.String("function", "", "acquire: the function's name")
	image := fs.String("image", "", "acquire: the image reference")
	env := envFlag{}
	fs.Var(env, "env", "acquire: KEY=VALUE, repeatable")
	memory := fs.Int64("memory", 0, "acquire: memory limit in bytes (0: the agent's default)")
	cpu := fs.Int64("cpu", 0, "acquire: CPU limit in thousandths of a CPU (0: none)")
	requestID := fs.String("request-id", "", "acquire: idempotency key")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the agent")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if c.out != "text" && c.out != "json" {
		return usageError{fmt.Errorf("-o must be text or json, not %q", c.out)}
	}
	stack, err := conf.StackOf(*network)
	if err != nil {
		return usageError{err}
	}
	if c.socket == "" {
		c.socket = stack.Socket
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	api := agentv1.NewAgentServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	id := func() (string, error) {
		if fs.NArg() < 1 {
			return "", usageError{fmt.Errorf("%s needs a worker ID", name)}
		}
		return fs.Arg(0), nil
	}
	switch name {
	case "acquire":
		if *function == "" || *image == "" {
			return usageError{errors.New("acquire needs -function and -image")}
		}
		r, err := api.AcquireWorker(ctx, &agentv1.AcquireWorkerRequest{Function: *function, Image: *image, Env: env,
			OwnerId: c.owner, RequestId: *requestID, Limits: &agentv1.Limits{MemoryBytes: *memory, CpuMillis: *cpu}})
		if err != nil {
			return explain(err)
		}
		return c.workers([]*agentv1.Worker{r.GetWorker()})
	case "release":
		wid, err := id()
		if err != nil {
			return err
		}
		if _, err := api.ReleaseWorker(ctx, &agentv1.ReleaseWorkerRequest{WorkerId: wid, OwnerId: c.owner}); err != nil {
			return explain(err)
		}
		_, err = fmt.Fprintf(stdout, "released %s\n", wid)
		return err
	case "ls":
		r, err := api.ListWorkers(ctx, &agentv1.ListWorkersRequest{OwnerId: c.owner})
		if err != nil {
			return explain(err)
		}
		return c.workers(r.GetWorkers())
	case "pause", "resume":
		wid, err := id()
		if err != nil {
			return err
		}
		var w *agentv1.Worker
		if name == "pause" {
			r, err := api.PauseWorker(ctx, &agentv1.PauseWorkerRequest{WorkerId: wid, OwnerId: c.owner})
			if err != nil {
				return explain(err)
			}
			w = r.GetWorker()
		} else {
			r, err := api.ResumeWorker(ctx, &agentv1.ResumeWorkerRequest{WorkerId: wid, OwnerId: c.owner})
			if err != nil {
				return explain(err)
			}
			w = r.GetWorker()
		}
		return c.workers([]*agentv1.Worker{w})
	case "metrics":
		wid, err := id()
		if err != nil {
			return err
		}
		m, err := api.WorkerMetrics(ctx, &agentv1.WorkerMetricsRequest{WorkerId: wid, OwnerId: c.owner})
		if err != nil {
			return explain(err)
		}
		if c.out == "json" {
			return json.NewEncoder(stdout).Encode(m)
		}
		_, err = fmt.Fprintf(stdout, "memory %d of %d bytes, cpu %s, oom kills %d, pids %d\n", m.GetMemoryUsageBytes(),
			m.GetMemoryLimitBytes(), time.Duration(m.GetCpuUsageNanos()), m.GetOomEvents(), m.GetPids())
		return err
	case "invoke":
		wid, err := id()
		if err != nil {
			return err
		}
		payload := "{}"
		if fs.NArg() > 1 {
			payload = fs.Arg(1)
		}
		r, err := api.ListWorkers(ctx, &agentv1.ListWorkersRequest{OwnerId: c.owner})
		if err != nil {
			return explain(err)
		}
		for _, w := range r.GetWorkers() {
			if w.GetId() == wid {
				return invoke(ctx, stdout, w, payload)
			}
		}
		return fmt.Errorf("no worker %s for owner %q (list workers with: esbctl ls)", wid, c.owner)
	case "status":
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: agentv1.AgentService_ServiceDesc.ServiceName})
		if err != nil {
			return explain(err)
		}
		r, err := api.ListWorkers(ctx, &agentv1.ListWorkersRequest{})
		if err != nil {
			return explain(err)
		}
		counts := map[string]int{}
		for _, w := range r.GetWorkers() {
			counts[strings.TrimPrefix(strings.ToLower(w.GetState().String()), "worker_state_")]++
		}
		if c.out == "json" {
			return json.NewEncoder(stdout).Encode(map[string]any{"health": h.GetStatus().String(), "workers": counts})
		}
		_, err = fmt.Fprintf(stdout, "agent %s on %s; workers: %d busy, %d idle, %d paused\n", h.GetStatus(), c.socket,
			counts["busy"], counts["idle"], counts["paused"])
		return err
	}
	return usageError{fmt.Errorf("unknown command %q", name)}
}

func (c *agentCmd) workers(ws []*agentv1.Worker) error {
	if c.out == "json" {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ws)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tFUNCTION\tOWNER\tIP\tPORT\tSTATE\tWARM\tAGE")
	for _, w := range ws {
		age := time.Since(time.UnixMilli(w.GetCreatedUnixMs())).Truncate(time.Second)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%v\t%s\n", w.GetId(), w.GetFunction(), w.GetOwnerId(), w.GetIp(), w.GetPort(),
			strings.TrimPrefix(strings.ToLower(w.GetState().String()), "worker_state_"), w.GetWarm(), age)
	}
	return tw.Flush()
}

// InvokePath is the Lambda runtime interface's invoke path.
const InvokePath = "/2015-03-31/functions/function/invocations"

func invoke(ctx context.Context, stdout io.Writer, w *agentv1.Worker, payload string) error {
	url := "http://" + net.JoinHostPort(w.GetIp(), strconv.Itoa(int(w.GetPort()))) + InvokePath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewBufferString(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("invoke %s: %w", w.GetId(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("invoke %s: %s: %s", w.GetId(), resp.Status, body)
	}
	_, err = fmt.Fprintln(stdout, strings.TrimRight(string(body), "\n"))
	return err
}
