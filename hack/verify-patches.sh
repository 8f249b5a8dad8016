#!/usr/bin/env bash
# Verifies that every line's series applies with git am (no fuzz) to a fresh
# copy of its pristine upstream tree, that no patch rewrites a line an
# earlier patch added, and that re-exporting it is byte-identical to what is
# committed.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

failed=0
tmp="" rewrites=""
for line in ${LINES:-$(rbdf::lines::list)}; do
  rbdf::lines::setup "${line}"
  [[ -s "${RBDF_PATCHES}/series" ]] || continue
  # Materialising checks that the series applies; then apply again from the
  # pristine tag into a throwaway clone so a stale tree cannot hide a problem.
  if [[ ! -d "${RBDF_TREE}/.git" ]]; then
    rbdf::tree::materialise || { failed=1; continue; }
  fi
  rbdf::util::tmpdir tmp
  rbdf::tree::git "${RBDF_TREE}" rev-parse -q --verify "refs/tags/${RBDF_KUBE_VERSION}" >/dev/null ||
    rbdf::log::fatal "${RBDF_TREE} has no tag ${RBDF_KUBE_VERSION}"
  git clone --quiet --shared --no-checkout "${RBDF_TREE}" "${tmp}/kubernetes"
  rbdf::tree::git "${tmp}/kubernetes" checkout --quiet --detach "${RBDF_KUBE_VERSION}"
  if ! rbdf::tree::apply "${tmp}/kubernetes" 1; then
    rbdf::log::error "${line}: the series does not apply to ${RBDF_KUBE_VERSION}"
    failed=1
    rbdf::util::tmpdir_rm "${tmp}"
    continue
  fi
  if ! rewrites="$(rbdf::tree::rewrites "${tmp}/kubernetes" "${RBDF_KUBE_VERSION}")"; then
    rbdf::log::error "${line}: could not check the series for rewritten lines (git failed; see above)"
    failed=1
  elif [[ -n "${rewrites}" ]]; then
    rbdf::log::error "${line}: a patch rewrites lines an earlier patch of the series added (each patch must be" \
      "final for its concern: make the change in the patch that added the line):"$'\n'"${rewrites}"
    failed=1
  fi
  mkdir "${tmp}/export"
  rbdf::tree::export "${tmp}/kubernetes" "${tmp}/export"
  mapfile -t theirs < <(rbdf::tree::series_files)
  mapfile -t ours < <(find "${tmp}/export" -name '*.patch' | sort)
  if ((${#ours[@]} != ${#theirs[@]})); then
    rbdf::log::error "${line}: export has ${#ours[@]} patch(es), the series lists ${#theirs[@]}"
    failed=1
  fi
  for i in "${!theirs[@]}"; do
    if [[ -z "${ours[${i}]:-}" ]] || ! diff -u "${theirs[${i}]}" "${ours[${i}]}" >&2; then
      rbdf::log::error "${line}: $(basename "${theirs[${i}]}") differs from a fresh export (hand-edited?);" \
        "regenerate it with: make kube-tree update-patches LINE=${line}"
      failed=1
    elif [[ "$(basename "${theirs[${i}]}")" != "$(basename "${ours[${i}]}")" ]]; then
      rbdf::log::error "${line}: $(basename "${theirs[${i}]}") should be named $(basename "${ours[${i}]}")"
      failed=1
    fi
  done
  rbdf::util::tmpdir_rm "${tmp}"
done
exit "${failed}"
