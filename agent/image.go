package agent

import (
	"errors"

	"github.com/edge-serverless-box/esbnet/shim"
)

// pullErr classifies a failed pull: an image the registry does not have
// is NotFound naming the image (the caller's mistake: retrying never
// helps), a registry that does not answer is Unavailable, and the rest is
// classified as any runtime failure.
func (a *Agent) pullErr(err error, image string) error {
	switch {
	case errors.Is(err, shim.ErrImageNotFound):
		return errf(NotFound, err, "image %s not found", image)
	case errors.Is(err, shim.ErrRegistryUnavailable):
		return errf(Unavailable, err, "image %s: its registry does not answer", image)
	}
	return a.runtimeErr(err, "pull image %s", image)
}
