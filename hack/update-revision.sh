#!/usr/bin/env bash
# Records RBDF_REVISION and the digest of every line's series as
# RBDF_REVISION_RECORD in hack/lib/lines.sh (hack/verify-revision.sh checks
# it). It refuses when the series changed and RBDF_REVISION did not: a
# changed series is a new revision, so bump RBDF_REVISION first.
# Usage: hack/update-revision.sh (make update-revision)
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/revision.sh
source "${RBDF_ROOT}/hack/lib/revision.sh"

readonly FILE="${RBDF_ROOT}/hack/lib/lines.sh"
digest="$(rbdf::revision::digest)"
# An unreadable record is not replaced: that would re-record without a bump.
record="$(rbdf::revision::recorded)" || exit 1
{ read -r recorded_revision; read -r recorded_digest; } <<<"${record}"

if [[ "${RBDF_REVISION}" == "${recorded_revision}" ]]; then
  if [[ "${digest}" == "${recorded_digest}" ]]; then
    rbdf::log::info "revision ${RBDF_REVISION} is recorded with the series as they are: nothing to do"
    exit 0
  fi
  rbdf::log::fatal "the series changed since revision ${recorded_revision} was recorded, and RBDF_REVISION is" \
    "still ${RBDF_REVISION}: bump RBDF_REVISION in hack/lib/lines.sh to $((recorded_revision + 1)), then run this again"
fi
# Revisions only go up: a binary's version names its revision.
if ((RBDF_REVISION < recorded_revision)); then
  rbdf::log::fatal "RBDF_REVISION ${RBDF_REVISION} is below the recorded revision ${recorded_revision}:" \
    "revisions only go up; set RBDF_REVISION to $((recorded_revision + 1))"
fi

sed -i "s|^readonly RBDF_REVISION_RECORD=.*\$|readonly RBDF_REVISION_RECORD=\"${RBDF_REVISION}:${digest}\"|" "${FILE}"
grep -q "^readonly RBDF_REVISION_RECORD=\"${RBDF_REVISION}:${digest}\"\$" "${FILE}" ||
  rbdf::log::fatal "could not write RBDF_REVISION_RECORD in ${FILE}"
rbdf::log::info "recorded revision ${RBDF_REVISION} with the series digest ${digest}"
