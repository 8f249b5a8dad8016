#!/usr/bin/env bash
# Runs shellcheck (Debian's package, installed by hack/install-deps.sh) on
# every shell script of the project.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

command -v shellcheck >/dev/null || rbdf::log::fatal "shellcheck not found: run hack/install-deps.sh"
cd "${RBDF_ROOT}"
mapfile -t scripts < <(
  { find hack test -name '*.sh' -type f 2>/dev/null; echo .ci/run; } | sort)
shellcheck -x -P SCRIPTDIR -P "${RBDF_ROOT}" "${scripts[@]}"
