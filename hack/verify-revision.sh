#!/usr/bin/env bash
# Verifies that RBDF_REVISION names the series as they are: RBDF_REVISION_RECORD
# in hack/lib/lines.sh holds the revision and the digest of every line's
# series (rbdf::revision::digest) that hack/update-revision.sh recorded. A
# series that changed under the same revision would ship different patches
# (and binaries) with the same version, vX.Y.Z+rbdfailover.N.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/revision.sh
source "${RBDF_ROOT}/hack/lib/revision.sh"

digest="$(rbdf::revision::digest)"
record="$(rbdf::revision::recorded)" || exit 1
{ read -r recorded_revision; read -r recorded_digest; } <<<"${record}"

if [[ "${RBDF_REVISION}" != "${recorded_revision}" ]]; then
  rbdf::log::error "RBDF_REVISION is ${RBDF_REVISION}, but the series are recorded for revision ${recorded_revision}:" \
    "record revision ${RBDF_REVISION} with hack/update-revision.sh (make update-revision)"
  exit 1
fi
if [[ "${digest}" != "${recorded_digest}" ]]; then
  rbdf::log::error "the series changed since revision ${recorded_revision} was recorded, and RBDF_REVISION was not bumped" \
    "(series digest ${digest}, recorded ${recorded_digest})."
  rbdf::log::error "If the change is meant: bump RBDF_REVISION in hack/lib/lines.sh to $((recorded_revision + 1))," \
    "then run hack/update-revision.sh (make update-revision). If not: restore patches/ from git."
  exit 1
fi
