#!/usr/bin/env bash
# Common setup for every script under hack/: sourced, never run.

RBDF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
export RBDF_ROOT
RBDF_OUTPUT="${RBDF_ROOT}/_output"

# shellcheck source=hack/lib/logging.sh
source "${RBDF_ROOT}/hack/lib/logging.sh"
# Temporary directories. rbdf::util::tmpdir registers each one it makes with
# a single EXIT trap, rbdf::util::tmpdir_cleanup, which removes every
# directory the exiting shell registered: on success, on exit 1 and on
# rbdf::log::fatal alike, however many calls were made. Scripts set no EXIT
# trap of their own (rbdf::util::tmpdir refuses to replace one); a temporary
# file is a file in such a directory. Entries are "PID:PATH", so that a
# subshell ($(...), a pipeline) that inherits the list removes only the
# directories it made itself.
RBDF_TMPDIRS=()

# rbdf::util::tmpdir VAR [PARENT [PREFIX]] creates a directory PREFIX.XXXXXX
# (default rbdf.XXXXXX) in PARENT (default ${TMPDIR:-/tmp}), registers it for
# removal when the shell exits and assigns its path to the variable VAR
# (which may be the caller's local). Call it directly, not in $(...): a
# subshell would remove the directory as it returns.
rbdf::util::tmpdir() {
  local _rbdf_var="$1" _rbdf_parent="${2:-${TMPDIR:-/tmp}}" _rbdf_prefix="${3:-rbdf}"
  local _rbdf_dir _rbdf_trap
  [[ "${_rbdf_var}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] ||
    rbdf::log::fatal "rbdf::util::tmpdir: '${_rbdf_var}' is not a variable name"
  _rbdf_trap="$(trap -p EXIT)"
  if [[ -n "${_rbdf_trap}" && "${_rbdf_trap}" != "trap -- 'rbdf::util::tmpdir_cleanup' EXIT" ]]; then
    rbdf::log::fatal "rbdf::util::tmpdir: an EXIT trap is already set (${_rbdf_trap}); make its cleanup go through rbdf::util::tmpdir"
  fi
  _rbdf_dir="$(mktemp -d "${_rbdf_parent}/${_rbdf_prefix}.XXXXXX")" ||
    rbdf::log::fatal "rbdf::util::tmpdir: cannot create a directory in ${_rbdf_parent}"
  RBDF_TMPDIRS+=("${BASHPID}:${_rbdf_dir}")
  trap rbdf::util::tmpdir_cleanup EXIT
  printf -v "${_rbdf_var}" '%s' "${_rbdf_dir}"
}

# rbdf::util::tmpdir_rm DIR removes a directory from rbdf::util::tmpdir now,
# rather than when the shell exits.
rbdf::util::tmpdir_rm() {
  local i
  rm -rf "$1"
  for i in "${!RBDF_TMPDIRS[@]}"; do
    if [[ "${RBDF_TMPDIRS[${i}]}" == "${BASHPID}:$1" ]]; then
      unset 'RBDF_TMPDIRS[i]'
    fi
  done
}

# rbdf::util::tmpdir_cleanup is the EXIT trap: it removes the directories
# this shell registered. It keeps the exit status of the script.
rbdf::util::tmpdir_cleanup() {
  local rc=$? entry
  for entry in "${RBDF_TMPDIRS[@]}"; do
    if [[ "${entry%%:*}" == "${BASHPID}" ]]; then
      rm -rf "${entry#*:}" || rbdf::log::warning "could not remove ${entry#*:}"
    fi
  done
  return "${rc}"
}

# shellcheck source=hack/lib/lines.sh
source "${RBDF_ROOT}/hack/lib/lines.sh"
# shellcheck source=hack/lib/tree.sh
source "${RBDF_ROOT}/hack/lib/tree.sh"

# Upstream's scripts default GOCACHE/GOMODCACHE into the tree; share ours so
# the patched and stock builds reuse each other's compiled packages.
GOCACHE="$(go env GOCACHE)"
GOMODCACHE="$(go env GOMODCACHE)"
export GOCACHE GOMODCACHE

# rbdf::verify::names prints the checks hack/verify.sh runs: every
# hack/verify-*.sh, so that a new one cannot be left out of make verify or
# make test.
rbdf::verify::names() {
  local f
  for f in "${RBDF_ROOT}"/hack/verify-*.sh; do
    f="${f##*/verify-}"
    printf '%s\n' "${f%.sh}"
  done
}
