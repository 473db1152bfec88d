#!/usr/bin/env bash
# Builds esbnet's pod sandbox ("pause") program (tests/images/pause) and pushes it
# to the local registry as an OCI image with just the binary /pause (the
# entrypoint). A Kubernetes node under containerd's CRI plugin runs one such
# container per pod (sandbox_image in deploy/containerd/config.toml); this
# one is built from source, for nodes and tests without internet access.
# scripts/go-image.sh does the work (reproducible build, other settings).
# Prints the image reference on stdout.
#
# Environment (besides go-image.sh's):
#   ESB_PAUSE_REPO      repository:tag in the registry   (default esb/pause:latest)
set -euo pipefail
here=$(dirname "$0")
ESB_IMAGE_BY=scripts/pause-image.sh exec "$here/go-image.sh" ./tests/images/pause pause "${ESB_PAUSE_REPO:-esb/pause:latest}"
