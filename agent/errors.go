package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// Code classifies an agent error; the gRPC server maps each to a status code.
type Code int

// Error classes.
const (
	Internal     Code = iota
	Invalid           // a request field is bad (InvalidArgument)
	NotFound          // no such worker (NotFound)
	Permission        // the caller does not own the worker (PermissionDenied)
	Unavailable       // the runtime does not answer (Unavailable)
	Exhausted         // no address, or a limit reached (ResourceExhausted)
	NotReady          // the worker did not become ready in time (DeadlineExceeded)
	Precondition      // the worker is not in a state for the call, e.g. paused (FailedPrecondition)
	Exited            // the worker's process ended before its port opened: the image is at fault (FailedPrecondition)
)

// Error is an agent error with a class and, for Invalid, the field.
type Error struct {
	Code  Code
	Field string
	Msg   string
	Err   error
}

func (e *Error) Error() string {
	msg := e.Msg
	if e.Field != "" {
		msg = fmt.Sprintf("invalid %s: %s", e.Field, e.Msg)
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// CodeOf returns the class of err (Internal for foreign errors).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

func invalid(field, format string, args ...any) *Error {
	return &Error{Code: Invalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func errf(code Code, err error, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Err: err}
}

// runtimeErr classifies a runtime failure.
func (a *Agent) runtimeErr(err error, format string, args ...any) error {
	if errors.Is(err, shim.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return errf(Unavailable, err, format, args...)
	}
	return errf(Internal, err, format, args...)
}

// cniErr classifies a network failure: an exhausted range (esb-ipam's
// code 100, or STATUS's 50) and a full bridge (esb-bridge's 103) are
// ResourceExhausted.
func (a *Agent) cniErr(err error) error {
	if conf.IsExhausted(err) {
		return errf(Exhausted, err, "no address left on the esb network")
	}
	if conf.IsBridgeFull(err) {
		return errf(Exhausted, err, "the esb network's bridge is full: a Linux bridge holds at most %d ports, one per worker", conf.BridgeMaxPorts)
	}
	return errf(Internal, err, "attach the worker to the esb network")
}
