package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
)

// Errors of image pulls, for callers to act on: a caller's wrong image is
// not the agent's internal error, and a registry that does not answer is
// worth a retry.
var (
	// ErrImageNotFound: the registry answered and has no such image (or
	// tag, or manifest for this platform).
	ErrImageNotFound = errors.New("image not found in its registry")
	// ErrRegistryUnavailable: the registry did not answer (refused,
	// unreachable, unknown host, timed out).
	ErrRegistryUnavailable = errors.New("registry unavailable")
)

// Texts of a daemon's pull errors that arrive as plain strings (dockerd's
// pull stream): what the registry said, or how reaching it failed.
var (
	notFoundTexts    = []string{"manifest unknown", "not found", "no matching manifest", "name unknown", "repository does not exist"}
	unreachableTexts = []string{"connection refused", "no such host", "i/o timeout", "no route to host", "network is unreachable",
		"connection reset", "tls handshake timeout", "server misbehaving", "eof"}
)

// PullError classifies a failed pull of ref from the error its client or
// daemon gave: ErrImageNotFound, ErrRegistryUnavailable or neither, always
// keeping err in the chain.
func PullError(ref string, err error) error {
	switch {
	case imageMissing(err):
		return fmt.Errorf("pull %s: %w: %w", ref, ErrImageNotFound, err)
	case registryUnreachable(err):
		return fmt.Errorf("pull %s: %w: %w", ref, ErrRegistryUnavailable, err)
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

func imageMissing(err error) bool {
	if errdefs.IsNotFound(err) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return !registryUnreachable(err) && containsAny(msg, notFoundTexts)
}

func registryUnreachable(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &dns), errors.As(err, &op),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.ECONNRESET):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	case errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return containsAny(strings.ToLower(err.Error()), unreachableTexts)
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// Puller is what a runtime offers for --image-pull-policy always: a pull
// that asks the registry what a tag names now, and a look at the local
// store for the fallback when the registry does not answer.
type Puller interface {
	// PullImage resolves ref in its registry, fetches what is new and
	// returns the digest ref names now. Errors as EnsureImage's:
	// ErrImageNotFound, ErrRegistryUnavailable, ErrUnavailable.
	PullImage(ctx context.Context, ref string) (digest string, err error)
	// HasImage reports whether ref is present locally, ready to run.
	HasImage(ctx context.Context, ref string) bool
}

// TaskCreator is a Runtime whose start comes in two halves (containerd):
// CreateTask makes the worker's task, its process not yet running, and
// Start then runs it. The agent makes the network meanwhile, so that the
// worker's process starts with its network up, as without the split.
type TaskCreator interface {
	CreateTask(ctx context.Context, id string) error
}
