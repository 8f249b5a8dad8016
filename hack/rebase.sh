#!/usr/bin/env bash
# Moves a release line's series onto another upstream patch release.
#
# Usage: hack/rebase.sh LINE NEW_VERSION [--from SOURCE_LINE]
#        hack/rebase.sh --finish LINE NEW_VERSION [--from SOURCE_LINE]
#
# Materialises NEW_VERSION as LINE's tree (_output/... /kubernetes), applies
# the series of LINE (or of SOURCE_LINE, to seed a new line) with git am -3
# (falling back to one line of context, reported as a warning to review),
# and on success exports the result to patches/LINE and pins LINE to
# NEW_VERSION in hack/lib/lines.sh. On a conflict it stops with the tree as
# git am left it and says how to go on; --finish, once the conflict is
# resolved, applies the rest of the series the same way, exports and pins.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

usage() {
  rbdf::log::fatal "usage: $0 LINE NEW_VERSION [--from SOURCE_LINE] | $0 --finish LINE NEW_VERSION [--from SOURCE_LINE]"
}

# pin records NEW_VERSION as LINE's release in the line table.
pin() {
  local line="$1" version="$2" file="${RBDF_ROOT}/hack/lib/lines.sh"
  sed -i "s|^  \[${line}\]=v[0-9.]*$|  [${line}]=${version}|" "${file}"
  grep -q "^  \[${line}\]=${version}$" "${file}" || rbdf::log::fatal "could not pin ${line} to ${version} in ${file}"
}

finish() {
  "${RBDF_ROOT}/hack/update-patches.sh" "$1"
  pin "$1" "$2"
  rbdf::log::info "${1} now carries $(wc -l < "${RBDF_ROOT}/patches/${1}/series") patch(es) on ${2}"
}

# stopped tells how to go on after a conflict.
stopped() {
  rbdf::log::error "rebasing $1 onto $2 stopped at a conflict; once resolved and"
  rbdf::log::error "'git -C ${RBDF_TREE} am --continue' has finished, run:"
  rbdf::log::error "  hack/rebase.sh --finish $1 $2${3:+ --from $3}"
  exit 1
}

if [[ "${1:-}" == --finish ]]; then
  (($# == 3 || $# == 5)) || usage
  from="$2"
  if (($# == 5)); then
    [[ "$4" == --from ]] || usage
    from="$5"
  fi
  rbdf::lines::setup "${from}" >/dev/null
  source_patches="${RBDF_PATCHES}"
  rbdf::lines::setup "$2" "$3"
  if [[ -d "${RBDF_TREE}/.git/rebase-apply" ]]; then
    rbdf::log::fatal "git am is still in progress in ${RBDF_TREE}: resolve, then git -C ${RBDF_TREE} am --continue"
  fi
  # The series stopped at the conflict: the patches after it are not
  # applied yet.
  tag="$(rbdf::tree::git "${RBDF_TREE}" describe --tags --abbrev=0 HEAD)"
  applied="$(rbdf::tree::git "${RBDF_TREE}" rev-list --count "${tag}..HEAD")"
  RBDF_PATCHES="${source_patches}" RBDF_AM_FLAGS="-3" RBDF_AM_REDUCED_CONTEXT=1 \
    rbdf::tree::apply "${RBDF_TREE}" $((applied + 1)) || stopped "$2" "$3" "${5:-}"
  finish "$2" "$3"
  exit 0
fi

(($# == 2 || $# == 4)) || usage
line="$1" version="$2" from="$1"
if (($# == 4)); then
  [[ "$3" == --from ]] || usage
  from="$4"
fi
[[ "${version}" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || rbdf::log::fatal "NEW_VERSION must look like v1.30.4, not '${version}'"
rbdf::lines::setup "${from}" >/dev/null
source_patches="${RBDF_PATCHES}"
rbdf::lines::setup "${line}" "${version}"
[[ "${version}" == "v${line#v}."* ]] || rbdf::log::fatal "${version} is not a release of the ${line} line"

state="$(rbdf::tree::state "${RBDF_TREE}")"
if [[ "${state}" == dirty ]]; then
  rbdf::log::fatal "${RBDF_TREE} holds work not in patches/${line}: export it (make update-patches LINE=${line}) or remove it first"
fi
rm -rf "${RBDF_TREE}" "${RBDF_STOCK_TREE}"
# Materialise the new release with the source series applied three-way.
RBDF_PATCHES="${source_patches}" RBDF_AM_FLAGS="-3" RBDF_AM_REDUCED_CONTEXT=1 rbdf::tree::materialise ||
  stopped "${line}" "${version}" "$([[ "${from}" != "${line}" ]] && echo "${from}")"
finish "${line}" "${version}"
