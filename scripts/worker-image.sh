#!/usr/bin/env bash
# Builds the esbnet test worker (tests/images/worker) and pushes it to the local
# registry as an OCI image with just the binary /esb-worker (the
# entrypoint, ExposedPorts 8080/tcp); see scripts/go-image.sh, which does
# the work, for the reproducible build and the other settings. Prints the
# image reference on stdout.
#
# Environment (besides go-image.sh's):
#   ESB_WORKER_REPO     repository:tag in the registry   (default esb/worker:latest)
#   ESB_WORKER_OCI      keep the OCI layout in this directory (ESB_IMAGE_OCI)
set -euo pipefail
here=$(dirname "$0")
ESB_IMAGE_BY=scripts/worker-image.sh ESB_IMAGE_OCI=${ESB_WORKER_OCI:-${ESB_IMAGE_OCI:-}} \
	exec "$here/go-image.sh" ./tests/images/worker esb-worker "${ESB_WORKER_REPO:-esb/worker:latest}" 8080/tcp
