#!/usr/bin/env bash
# The release lines this project carries: the one place that knows them.

# Patch-set revision: bump it whenever any series changes what it builds.
readonly RBDF_REVISION=8
# The revision and the digest of every line's series it was recorded with
# (rbdf::revision::digest), so that hack/verify-revision.sh can tell a
# changed series under an old revision. Written by hack/update-revision.sh
# (make update-revision), which refuses a changed series without a bump.
# shellcheck disable=SC2034 # read by hack/lib/revision.sh
readonly RBDF_REVISION_RECORD="8:78f75e257c77c9072a2cc7393a43ab741ed04229e7d32873d85a6916548157df"

readonly RBDF_PRIMARY_LINE=v1.30

# line -> upstream Kubernetes release the line's series applies to.
declare -A RBDF_LINE_VERSION=(
  [v1.30]=v1.30.14
  [v1.29]=v1.29.15
  [v1.28]=v1.28.15
)
readonly -A RBDF_LINE_VERSION

# line -> Go build tags our specs need to compile against that line's API.
declare -A RBDF_LINE_GOTAGS=(
  [v1.30]=""
  [v1.29]="kube_pre_1_30"
  [v1.28]="kube_pre_1_30"
)
readonly -A RBDF_LINE_GOTAGS

# rbdf::lines::list prints the supported lines, newest first.
rbdf::lines::list() {
  printf '%s\n' "${!RBDF_LINE_VERSION[@]}" | sort -rV
}

# rbdf::lines::setup LINE [VERSION] validates LINE and exports what the other
# scripts need about it. VERSION overrides the line's pinned release (rebase).
rbdf::lines::setup() {
  local line="${1:-${RBDF_PRIMARY_LINE}}"
  if [[ -z "${RBDF_LINE_VERSION[${line}]+x}" ]]; then
    rbdf::log::fatal "unknown LINE '${line}'; supported lines: $(rbdf::lines::list | tr '\n' ' ')"
  fi
  RBDF_LINE="${line}"
  RBDF_KUBE_VERSION="${2:-${RBDF_LINE_VERSION[${line}]}}"
  # k8s.io/kubernetes v1.X.Y ships its staging modules as v0.X.Y.
  RBDF_STAGING_VERSION="v0.${RBDF_KUBE_VERSION#v1.}"
  RBDF_VERSION="${RBDF_KUBE_VERSION}+rbdfailover.${RBDF_REVISION}"
  RBDF_PATCHES="${RBDF_ROOT}/patches/${line}"
  if [[ "${line}" == "${RBDF_PRIMARY_LINE}" ]]; then
    RBDF_LINE_OUTPUT="${RBDF_OUTPUT}"
  else
    RBDF_LINE_OUTPUT="${RBDF_OUTPUT}/${line}"
  fi
  RBDF_TREE="${RBDF_LINE_OUTPUT}/kubernetes"
  RBDF_STOCK_TREE="${RBDF_LINE_OUTPUT}/stock/kubernetes"
  RBDF_GOTAGS="${RBDF_LINE_GOTAGS[${line}]}"
  export RBDF_LINE RBDF_KUBE_VERSION RBDF_STAGING_VERSION RBDF_VERSION \
    RBDF_PATCHES RBDF_LINE_OUTPUT RBDF_TREE RBDF_STOCK_TREE RBDF_GOTAGS
}
