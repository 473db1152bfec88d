package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// functionResult is the tests/images/function handler's answer.
type functionResult struct {
	RequestID string `json:"request_id"`
	Object    string `json:"object"`
	Item      string `json:"item"`
	Logged    string `json:"logged"`
}

// TestFunctionDataPath: a Lambda function image (aws-lambda-go behind the
// real Runtime Interface Emulator) on a worker of either runtime writes and
// reads back an object on s3-storage and an item on database and pushes a
// log line to victorialogs, all by name through the resolver, the gateway's
// DNAT forwards and HAProxy; the line is found again by a query. Logs the
// round trip's p50 over 100 invokes (a figure of issue 13, no assertion).
func TestFunctionDataPath(t *testing.T) { forRuntimes(t, testFunctionDataPath) }

func testFunctionDataPath(t *testing.T, e *env) {
	flags := e.startDataServices()
	e.useFunctionImage()
	e.startAgent(flags...)
	r := e.acquireReq("gateway-1", "fn-data")
	r.Env = functionEnv("fn-data")
	w := e.mustAcquire(r)

	body := "hello from a " + e.rt + " worker"
	res := e.invokeFunction(w, fmt.Sprintf(`{"key":"obj-%s","body":%q}`, e.rt, body))
	if res.Object != body || res.Item != body || res.Logged != "fn-data" || res.RequestID == "" {
		t.Fatalf("the function read back %+v, want object and item %q logged as fn-data with a request ID", res, body)
	}
	// VictoriaLogs makes lines searchable about a second after ingest.
	query := fmt.Sprintf(`function:fn-data AND request_id:%q`, res.RequestID)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := e.queryLogs(query)
		if err == nil && strings.Contains(out, `"key":"obj-`+e.rt+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VictoriaLogs has no line for %s: %v %q", query, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	const n = 100
	times := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		res := e.invokeFunction(w, fmt.Sprintf(`{"key":"k%d","body":"b%d"}`, i, i))
		times = append(times, time.Since(start))
		if res.Object != fmt.Sprintf("b%d", i) || res.Item != res.Object {
			t.Fatalf("invoke %d read back %+v", i, res)
		}
	}
	slices.Sort(times)
	t.Logf("%s: %d function round trips (S3 put+get, DynamoDB put+get, a log line): p50 %v, p90 %v, max %v",
		e.rt, n, times[n/2], times[n*9/10], times[n-1])

	e.mustRelease(w)
	e.expectNoTraces("after release")
}

// invokeFunction invokes the function through the Lambda path and decodes
// its answer.
func (e *env) invokeFunction(w *agentv1.Worker, payload string) functionResult {
	e.t.Helper()
	body, err := e.invoke(w, payload, 30*time.Second)
	if err != nil {
		e.t.Fatalf("invoke function worker %s: %v\nagent log:\n%s", w.GetId(), err, e.agent.log())
	}
	var res functionResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		e.t.Fatalf("decode the function's answer: %v\n%s", err, body)
	}
	return res
}
