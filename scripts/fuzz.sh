#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 2m), one
# at a time with one fuzzing worker, so a shared machine keeps a core.
# A failure stops the run; the failing input is saved under the package's
# testdata/fuzz/<Target>/ and then runs in every `go test` as a regression
# seed. Usage: scripts/fuzz.sh [package-pattern] (default ./...)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
fuzztime=${FUZZTIME:-2m}
pattern=${1:-./...}
mapfile -t pkgs < <(go list "$pattern" | grep -v /tests/)
for pkg in "${pkgs[@]}"; do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "== $pkg $target ($fuzztime)"
		go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 1
	done
done
