#!/usr/bin/env bash
# Exports the commits above the upstream tag in the materialised tree to
# patches/<line>/ and rewrites the series. Usage: hack/update-patches.sh [LINE]
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/revision.sh
source "${RBDF_ROOT}/hack/lib/revision.sh"

rbdf::lines::setup "${1:-${LINE:-}}"
[[ -d "${RBDF_TREE}/.git" ]] || rbdf::log::fatal "no tree at ${RBDF_TREE}: run make kube-tree LINE=${RBDF_LINE}"
if [[ -d "${RBDF_TREE}/.git/rebase-apply" ]]; then
  rbdf::log::fatal "git am is in progress in ${RBDF_TREE}: finish it (am --continue) or abort it first"
fi
if [[ -n "$(rbdf::tree::git "${RBDF_TREE}" status --porcelain)" ]]; then
  rbdf::log::fatal "${RBDF_TREE} has uncommitted changes: commit them (one commit per patch) first"
fi
tmp=""
rbdf::util::tmpdir tmp
rbdf::tree::export "${RBDF_TREE}" "${tmp}"
mkdir -p "${RBDF_PATCHES}"
find "${RBDF_PATCHES}" -maxdepth 1 -name '*.patch' -delete
: > "${tmp}/series"
while read -r patch; do
  cp "${patch}" "${RBDF_PATCHES}/"
  basename "${patch}" >> "${tmp}/series"
done < <(find "${tmp}" -maxdepth 1 -name '*.patch' | sort)
cp "${tmp}/series" "${RBDF_PATCHES}/series"
rbdf::log::info "exported $(wc -l < "${RBDF_PATCHES}/series") patch(es) to ${RBDF_PATCHES}"
# Say what make verify will ask for next: a changed series is a new
# revision (verify-revision), carried on every line (verify-lines).
recorded_revision="" recorded_digest=""
if record="$(rbdf::revision::recorded)"; then
  { read -r recorded_revision; read -r recorded_digest; } <<<"${record}"
fi
if [[ -n "${recorded_revision}" && "$(rbdf::revision::digest)" != "${recorded_digest}" ]]; then
  if [[ "${RBDF_REVISION}" == "${recorded_revision}" ]]; then
    next="bump RBDF_REVISION in hack/lib/lines.sh, then run hack/update-revision.sh"
  else
    next="record revision ${RBDF_REVISION} with hack/update-revision.sh"
  fi
  rbdf::log::warning "the series differ from revision ${recorded_revision}'s: ${next};" \
    "carry the change on every line (hack/verify-lines.sh compares each with ${RBDF_PRIMARY_LINE})"
fi
