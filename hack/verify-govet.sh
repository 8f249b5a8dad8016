#!/usr/bin/env bash
# Runs go vet on our module, compiled against the patched tree.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::materialise >/dev/null
modfile="$(rbdf::golang::modfile "${RBDF_TREE}" patched)"
mapfile -t pkgs < <(rbdf::golang::our_packages)
((${#pkgs[@]})) || exit 0
cd "${RBDF_ROOT}"
GOFLAGS=-mod=mod go vet -modfile="${modfile}" "${pkgs[@]}"
