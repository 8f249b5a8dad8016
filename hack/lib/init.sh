#!/usr/bin/env bash
# Common setup for every script under hack/: sourced, never run.

RBDF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
export RBDF_ROOT
RBDF_OUTPUT="${RBDF_ROOT}/_output"

# shellcheck source=hack/lib/logging.sh
source "${RBDF_ROOT}/hack/lib/logging.sh"
# shellcheck source=hack/lib/lines.sh
source "${RBDF_ROOT}/hack/lib/lines.sh"
# shellcheck source=hack/lib/tree.sh
source "${RBDF_ROOT}/hack/lib/tree.sh"

# Upstream's scripts default GOCACHE/GOMODCACHE into the tree; share ours so
# the patched and stock builds reuse each other's compiled packages.
GOCACHE="$(go env GOCACHE)"
GOMODCACHE="$(go env GOMODCACHE)"
export GOCACHE GOMODCACHE

# rbdf::verify::names prints the checks hack/verify.sh runs: every
# hack/verify-*.sh, so that a new one cannot be left out of make verify or
# make test.
rbdf::verify::names() {
  local f
  for f in "${RBDF_ROOT}"/hack/verify-*.sh; do
    f="${f##*/verify-}"
    printf '%s\n' "${f%.sh}"
  done
}
