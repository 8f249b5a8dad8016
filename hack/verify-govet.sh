#!/usr/bin/env bash
# Runs go vet on our module, compiled against each line's patched tree.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"

mapfile -t pkgs < <(rbdf::golang::our_packages)
((${#pkgs[@]})) || exit 0
failed=0
for line in ${LINES:-$(rbdf::lines::list)}; do
  rbdf::lines::setup "${line}"
  [[ -s "${RBDF_PATCHES}/series" ]] || continue
  rbdf::tree::materialise >/dev/null
  rbdf::golang::go "${RBDF_TREE}" "patched-${line}" vet -tags "${RBDF_GOTAGS}" "${pkgs[@]}" || failed=1
done
exit "${failed}"
