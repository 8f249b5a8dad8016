#!/usr/bin/env bash
# Verifies gofmt on our Go files and on every Go file the primary line's
# series touches in the materialised tree.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

rbdf::lines::setup "${LINE:-}"
files=()
while read -r f; do files+=("${RBDF_ROOT}/${f#./}"); done < <(
  cd "${RBDF_ROOT}" && find . -path ./_output -prune -o -name '*.go' -print)
while read -r f; do
  [[ -f "${RBDF_TREE}/${f}" ]] && files+=("${RBDF_TREE}/${f}")
done < <(rbdf::tree::series_files | xargs -r sed -n 's|^+++ b/\(.*\.go\)$|\1|p' | sort -u)
((${#files[@]})) || exit 0
bad="$(gofmt -l "${files[@]}")"
if [[ -n "${bad}" ]]; then
  rbdf::log::error "not gofmt-ed (run gofmt -w):"
  echo "${bad}" >&2
  exit 1
fi
