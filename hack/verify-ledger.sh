#!/usr/bin/env bash
# Verifies PATCHES.md against the series: every patch of every line has an
# entry with the DEP-3 fields and the prose sections, the entry lists every
# line that carries the patch (and no other), and every entry has a patch.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

readonly LEDGER="${RBDF_ROOT}/PATCHES.md"
readonly FIELDS=(Description Author Origin Bug Forwarded Last-Update Lines)
readonly SECTIONS=("Why" "What changes" "How tested" "Upstream status")

# entry SUBJECT prints the ledger section headed "## SUBJECT".
entry() {
  awk -v h="## $1" '$0 == h { on = 1; next } on && /^## / { exit } on { print }' "${LEDGER}"
}

[[ -f "${LEDGER}" ]] || rbdf::log::fatal "PATCHES.md is missing"
failed=0
declare -A carried=()
for line in $(rbdf::lines::list); do
  rbdf::lines::setup "${line}"
  while read -r patch; do
    [[ -f "${patch}" ]] || continue
    subject="$(rbdf::tree::patch_subject "${patch}")"
    carried["${subject}"]+="${line} "
  done < <(rbdf::tree::series_files)
done

for subject in "${!carried[@]}"; do
  text="$(entry "${subject}")"
  if [[ -z "${text}" ]]; then
    rbdf::log::error "PATCHES.md has no entry '## ${subject}'"
    failed=1
    continue
  fi
  for field in "${FIELDS[@]}"; do
    if ! grep -q "^- ${field}: [^ ]" <<<"${text}"; then
      rbdf::log::error "PATCHES.md '${subject}': field '${field}:' is missing or empty"
      failed=1
    fi
  done
  for section in "${SECTIONS[@]}"; do
    if ! grep -q "^\*\*${section}\.\*\* [^ ]" <<<"${text}"; then
      rbdf::log::error "PATCHES.md '${subject}': section '**${section}.**' is missing or empty"
      failed=1
    fi
  done
  listed="$(sed -n 's/^- Lines: //p' <<<"${text}" | tr -s ', ' '\n' | sort -u | xargs)"
  actual="$(tr ' ' '\n' <<<"${carried[${subject}]}" | sed '/^$/d' | sort -u | xargs)"
  if [[ "${listed}" != "${actual}" ]]; then
    rbdf::log::error "PATCHES.md '${subject}': Lines: says '${listed}', the series carry it on '${actual}'"
    failed=1
  fi
done

while read -r subject; do
  if [[ -z "${carried[${subject}]+x}" ]]; then
    rbdf::log::error "PATCHES.md entry '## ${subject}' has no patch in any series"
    failed=1
  fi
done < <(sed -n 's/^## \(UPSTREAM: .*\)$/\1/p' "${LEDGER}")
exit "${failed}"
