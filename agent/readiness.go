package agent

import (
	"context"

	"github.com/edge-serverless-box/esbnet/shim"
)

// notReady classifies the end of a worker's process (or of the runtime's
// answer) during the readiness wait: a runtime that stopped answering is
// Unavailable; a process that exited on its own is the image's fault,
// Exited (FailedPrecondition) with the last lines of its log. A process
// killed by a signal the agent did not send is watched as in create: a
// daemon that shuts down stops its containers before it closes its API,
// so a runtime that goes away within runtimeGoingWindow makes it
// Unavailable too.
func (a *Agent) notReady(ctx context.Context, w *Worker, addr string, ex shim.Exit) error {
	if ex.Err != nil {
		return errf(Unavailable, ex.Err, "worker %s did not accept TCP on %s: the runtime does not answer", w.ID, addr)
	}
	if ex.Code > 128 {
		if perr := a.runtimeGoing(context.WithoutCancel(ctx)); perr != nil {
			return a.runtimeErr(perr, "worker %s was stopped before its port opened: the runtime does not answer", w.ID)
		}
	}
	msg := "worker %s exited with status %d before its port opened"
	if ex.Log == "" {
		return errf(Exited, nil, msg+" (its log is empty)", w.ID, ex.Code)
	}
	return errf(Exited, nil, msg+"; the last lines of its log:\n%s", w.ID, ex.Code, ex.Log)
}
