#!/usr/bin/env bash
# The patch-set revision and the record of the series it names
# (RBDF_REVISION_RECORD in hack/lib/lines.sh): hack/verify-revision.sh and
# hack/update-revision.sh.

# rbdf::revision::digest prints the sha256 of every line's series: the line's
# name, the names of the patches its series lists (its comments and blank
# lines change nothing) and each patch as rbdf::tree::patch_stable prints it,
# so that what moves without the change changing does not move the digest.
rbdf::revision::digest() {
  local line patch sum
  # errexit is not inherited by a command substitution: set it here, so
  # that a patch that cannot be read fails the digest.
  sum="$(set -eo pipefail
    for line in $(rbdf::lines::list | LC_ALL=C sort); do
      if [[ ! -f "${RBDF_ROOT}/patches/${line}/series" ]]; then
        rbdf::log::error "patches/${line}/series is missing"
        exit 1
      fi
      printf 'line %s\n' "${line}"
      while read -r patch; do
        if [[ ! -f "${patch}" ]]; then
          rbdf::log::error "${line}/$(basename "${patch}"): listed in the series but missing"
          exit 1
        fi
        printf 'patch %s\n' "$(basename "${patch}")"
        rbdf::tree::patch_stable "${patch}"
      done < <(RBDF_PATCHES="${RBDF_ROOT}/patches/${line}" rbdf::tree::series_files)
    done | sha256sum)" || return 1
  printf '%s\n' "${sum%% *}"
}

# rbdf::revision::recorded prints the recorded revision and digest, one a
# line, or fails if the record is not "REVISION:SHA256".
rbdf::revision::recorded() {
  if ! [[ "${RBDF_REVISION_RECORD:-}" =~ ^([0-9]+):([0-9a-f]{64})$ ]]; then
    rbdf::log::error "RBDF_REVISION_RECORD in hack/lib/lines.sh is '${RBDF_REVISION_RECORD:-}', not REVISION:SHA256:" \
      "restore it from git (hack/update-revision.sh does not replace a record it cannot read)"
    return 1
  fi
  printf '%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
}
