#!/usr/bin/env bash
# Verifies that every release line carries the primary line's patches: the
# same subjects in the same order and, for each patch, the same commit
# message and the same added and removed lines in each file
# (rbdf::tree::patch_changes), so that a fix made on one line only is
# caught. Context lines, "index" lines and hunk headers may differ: they
# follow upstream's code, which differs between releases. A difference a
# line needs is listed, with the reason, in hack/lib/line-differences;
# anything else fails, and so does a listed difference that is gone or has
# changed since it was listed.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

readonly ALLOWED="${RBDF_ROOT}/hack/lib/line-differences"
readonly ALLOWED_NAME="hack/lib/line-differences"
# At most this many lines of each difference are shown.
readonly SHOW=60

[[ -f "${ALLOWED}" ]] || rbdf::log::fatal "${ALLOWED_NAME} is missing"
failed=0

# allowed["LINE PATCH PATH"] is the listed digest, where[...] its line in
# the file; used[...] is set once a difference matched the entry.
declare -A allowed=() where=() used=()
n=0
while read -r line patch path digest why; do
  n=$((n + 1))
  [[ -z "${line}" || "${line}" == \#* ]] && continue
  key="${line} ${patch} ${path}"
  if [[ -z "${RBDF_LINE_VERSION[${line}]+x}" || "${line}" == "${RBDF_PRIMARY_LINE}" || -z "${why}" ]] ||
    ! [[ "${path}" == /SERIES && "${digest}" == - || "${path}" != /SERIES && "${digest}" =~ ^[0-9a-f]{12}$ ]]; then
    rbdf::log::error "${ALLOWED_NAME}:${n}: not 'LINE PATCH PATH DIGEST WHY' (LINE one of the lines but" \
      "${RBDF_PRIMARY_LINE}, DIGEST 12 hex digits, or - with /SERIES)"
    failed=1
    continue
  fi
  if [[ -n "${allowed[${key}]+x}" ]]; then
    rbdf::log::error "${ALLOWED_NAME}:${n}: '${key}' is listed twice"
    failed=1
  fi
  allowed["${key}"]="${digest}"
  where["${key}"]="${n}"
done < "${ALLOWED}"

tmp=""
rbdf::util::tmpdir tmp

# series_of LINE sets files and subjects to LINE's series.
files=() subjects=()
series_of() {
  local patch
  rbdf::lines::setup "$1"
  files=() subjects=()
  while read -r patch; do
    if [[ ! -f "${patch}" ]]; then
      rbdf::log::error "$1/$(basename "${patch}"): listed in the series but missing"
      failed=1
      continue
    fi
    files+=("${patch}")
    subjects+=("$(rbdf::tree::patch_subject "${patch}")")
  done < <(rbdf::tree::series_files)
}

# show A B LABEL_A LABEL_B prints the unified diff of two files, cut short.
show() {
  local out
  # Hunk headers count rows of the changes, not lines of the file: drop them.
  out="$(diff -u --label "$3" --label "$4" "$1" "$2" | sed 's/^@@ .* @@$/@@/' || true)"
  head -n "${SHOW}" <<<"${out}" >&2
  if (($(wc -l <<<"${out}") > SHOW)); then
    echo "... ($(($(wc -l <<<"${out}") - SHOW)) more lines)" >&2
  fi
}

# drop_listed LINE SIDE FILES SUBJECTS OTHER removes from the arrays named
# FILES and SUBJECTS (SIDE's series) each patch whose subject the array named
# OTHER lacks, if "LINE PATCH /SERIES" is listed; the others stay, to be
# reported.
drop_listed() {
  local line="$1" side="$2" i s key
  local -n _files="$3" _subjects="$4" _other="$5"
  local -A in_other=()
  local keep_files=() keep_subjects=()
  for s in "${_other[@]}"; do in_other["${s}"]=1; done
  for i in "${!_files[@]}"; do
    key="${line} $(basename "${_files[${i}]}") /SERIES"
    if [[ -z "${in_other[${_subjects[${i}]}]+x}" && -n "${allowed[${key}]+x}" ]]; then
      used["${key}"]=1
      rbdf::log::info "${side}/$(basename "${_files[${i}]}"): carried on ${side} and not on" \
        "$([[ "${side}" == "${line}" ]] && echo "${RBDF_PRIMARY_LINE}" || echo "${line}"), as ${ALLOWED_NAME}:${where[${key}]} lists"
      continue
    fi
    keep_files+=("${_files[${i}]}")
    keep_subjects+=("${_subjects[${i}]}")
  done
  _files=("${keep_files[@]}")
  _subjects=("${keep_subjects[@]}")
}

series_of "${RBDF_PRIMARY_LINE}"
primary_files=("${files[@]}") primary_subjects=("${subjects[@]}")
declare -A checked=()
for line in ${LINES:-$(rbdf::lines::list)}; do
  [[ "${line}" == "${RBDF_PRIMARY_LINE}" ]] && continue
  checked["${line}"]=1
  series_of "${line}"
  # Pair the patches up, leaving out those listed as carried on one side.
  p_files=("${primary_files[@]}") p_subjects=("${primary_subjects[@]}")
  l_files=("${files[@]}") l_subjects=("${subjects[@]}")
  drop_listed "${line}" "${RBDF_PRIMARY_LINE}" p_files p_subjects subjects
  drop_listed "${line}" "${line}" l_files l_subjects primary_subjects

  printf '%s\n' "${p_subjects[@]}" > "${tmp}/primary.series"
  printf '%s\n' "${l_subjects[@]}" > "${tmp}/line.series"
  if ! cmp -s "${tmp}/primary.series" "${tmp}/line.series"; then
    rbdf::log::error "${line}: the series does not carry ${RBDF_PRIMARY_LINE}'s patches in the same order (subjects):"
    show "${tmp}/primary.series" "${tmp}/line.series" "${RBDF_PRIMARY_LINE}/series" "${line}/series"
    rbdf::log::error "  carry the same patches on every line (hack/rebase.sh ${line} ${RBDF_LINE_VERSION[${line}]}" \
      "--from ${RBDF_PRIMARY_LINE} makes the series from ${RBDF_PRIMARY_LINE}'s), or list a patch only one line" \
      "needs in ${ALLOWED_NAME}: ${line} PATCH /SERIES - <why>"
    failed=1
    continue
  fi

  for i in "${!p_files[@]}"; do
    pname="$(basename "${p_files[${i}]}")" name="$(basename "${l_files[${i}]}")"
    rbdf::tree::patch_changes "${p_files[${i}]}" > "${tmp}/primary.changes"
    rbdf::tree::patch_changes "${l_files[${i}]}" > "${tmp}/line.changes"
    cmp -s "${tmp}/primary.changes" "${tmp}/line.changes" && continue
    # Each file the two patches change, in the primary's order.
    while IFS= read -r path; do
      awk -F'\t' -v p="${path}" '$1 == p { print substr($0, length(p) + 2) }' "${tmp}/primary.changes" > "${tmp}/p"
      awk -F'\t' -v p="${path}" '$1 == p { print substr($0, length(p) + 2) }' "${tmp}/line.changes" > "${tmp}/l"
      cmp -s "${tmp}/p" "${tmp}/l" && continue
      # The digest covers both sides: a change to either is a new difference.
      digest="$({ wc -l < "${tmp}/p"; cat "${tmp}/p" "${tmp}/l"; } | sha256sum | cut -c1-12)"
      key="${line} ${name} ${path}"
      what="the added and removed lines differ"
      [[ "${path}" == /COMMIT_MSG ]] && what="the commit message differs"
      if [[ "${allowed[${key}]:-}" == "${digest}" ]]; then
        used["${key}"]=1
        rbdf::log::info "${line}/${name}: ${path}: differs from ${RBDF_PRIMARY_LINE}'s as ${ALLOWED_NAME}:${where[${key}]} lists"
        continue
      fi
      if [[ -n "${allowed[${key}]+x}" ]]; then
        used["${key}"]=1
        rbdf::log::error "${line}/${name}: ${path}: ${what} from ${RBDF_PRIMARY_LINE}'s otherwise than when" \
          "${ALLOWED_NAME}:${where[${key}]} listed it (digest ${digest}, listed ${allowed[${key}]}):"
      else
        rbdf::log::error "${line}/${name}: ${path}: ${what} from ${RBDF_PRIMARY_LINE}'s:"
      fi
      show "${tmp}/p" "${tmp}/l" "${RBDF_PRIMARY_LINE}/${pname} ${path}" "${line}/${name} ${path}"
      if [[ -n "${allowed[${key}]+x}" ]]; then
        rbdf::log::error "  review it: if ${line} still needs it, give ${ALLOWED_NAME}:${where[${key}]} the digest ${digest}" \
          "(and say why in it); if not, make the change on every line and remove the entry"
      else
        rbdf::log::error "  make the change on every line (make kube-tree update-patches LINE=${line}), or, if ${line}" \
          "needs it, list it in ${ALLOWED_NAME}: ${line} ${name} ${path} ${digest} <why>"
      fi
      failed=1
    done < <(awk -F'\t' '!seen[$1]++ { print $1 }' "${tmp}/primary.changes" "${tmp}/line.changes")
  done
done

while IFS= read -r key; do
  [[ -n "${checked[${key%% *}]+x}" && -z "${used[${key}]+x}" ]] || continue
  rbdf::log::error "${ALLOWED_NAME}:${where[${key}]}: '${key}' matches no difference: remove it"
  failed=1
done < <(for key in "${!allowed[@]}"; do printf '%s\t%s\n' "${where[${key}]}" "${key}"; done | sort -n | cut -f2-)
rbdf::util::tmpdir_rm "${tmp}"
exit "${failed}"
