#!/usr/bin/env bash
# The materialised upstream tree: download, assemble, apply and export.

# Stable identity and options so that commits and exports are reproducible
# whatever the user's git configuration says.
readonly RBDF_GIT_NAME="kube-rbd-failover"
readonly RBDF_GIT_EMAIL="kube-rbd-failover@users.noreply.github.com"
readonly RBDF_PRISTINE_DATE="2000-01-01T00:00:00Z"

# rbdf::tree::git runs git in DIR with configuration independent of the user's.
rbdf::tree::git() {
  local dir="$1"
  shift
  GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null git -C "${dir}" \
    -c user.name="${RBDF_GIT_NAME}" -c user.email="${RBDF_GIT_EMAIL}" \
    -c core.abbrev=12 -c diff.noprefix=false -c diff.mnemonicPrefix=false \
    -c diff.renames=true -c diff.algorithm=myers -c format.signature= \
    -c am.threeWay=false -c core.autocrlf=false -c advice.detachedHead=false \
    "$@"
}

# rbdf::tree::staging_modules KUBE_DIR lists the staging modules the release
# replaces into its own tree, minus the sample-* examples that the module proxy
# does not serve and that no binary we build imports.
rbdf::tree::staging_modules() {
  awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$1/go.mod" |
    grep -v '^k8s.io/sample-'
}

# rbdf::tree::module_dir MODULE@VERSION downloads a module through the go
# command (checksums verified against go.sum or the checksum database) and
# prints its directory in the module cache.
rbdf::tree::module_dir() {
  local mod="$1" json dir="${RBDF_ROOT}" tmp=""
  # Versions our go.sum pins are checked against it; others (the older
  # lines, rebases) against the checksum database, from outside our module
  # so that go.sum stays as committed.
  if ! grep -q "^${mod%@*} ${mod#*@} " "${RBDF_ROOT}/go.sum"; then
    rbdf::util::tmpdir tmp
    dir="${tmp}"
  fi
  local rc=0
  json="$(cd "${dir}" && go mod download -json "${mod}")" || rc=$?
  [[ -z "${tmp}" ]] || rbdf::util::tmpdir_rm "${tmp}"
  if ((rc != 0)); then
    rbdf::log::error "go mod download ${mod} failed:"
    printf '%s\n' "${json}" | sed -n 's/.*"Error": *//p' >&2
    return 1
  fi
  printf '%s\n' "${json}" | sed -n 's/^[[:space:]]*"Dir": *"\(.*\)",*$/\1/p'
}

# rbdf::tree::assemble DEST builds the pristine tree of RBDF_KUBE_VERSION in
# DEST: the k8s.io/kubernetes module with every staging module in place,
# executable bits restored and the top-level Makefile symlink upstream has.
rbdf::tree::assemble() {
  local dest="$1" kdir mod sdir
  kdir="$(rbdf::tree::module_dir "k8s.io/kubernetes@${RBDF_KUBE_VERSION}")" || return 1
  [[ -n "${kdir}" ]] || { rbdf::log::error "no directory for k8s.io/kubernetes@${RBDF_KUBE_VERSION}"; return 1; }
  rbdf::log::info "assembling ${RBDF_KUBE_VERSION} from ${kdir}"
  cp -R "${kdir}/." "${dest}/"
  while read -r mod; do
    sdir="$(rbdf::tree::module_dir "${mod}@${RBDF_STAGING_VERSION}")" || return 1
    mkdir -p "${dest}/staging/src/${mod}"
    cp -R "${sdir}/." "${dest}/staging/src/${mod}/"
  done < <(rbdf::tree::staging_modules "${dest}")
  # The sample-* staging modules are not served by the module proxy, yet the
  # root go.mod and go.work name them: give each a placeholder go.mod so the
  # module graph resolves. Nothing we build imports them.
  while read -r mod; do
    mkdir -p "${dest}/staging/src/${mod}"
    printf '// Placeholder written by kube-rbd-failover: %s is not served by the module proxy.\nmodule %s\n' \
      "${mod}" "${mod}" > "${dest}/staging/src/${mod}/go.mod"
  done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "${dest}/go.mod" | grep '^k8s.io/sample-')
  chmod -R u+w "${dest}"
  # Lines without a go.work (before v1.30) build the staging modules as
  # replaced dependencies of one module; the published staging go.mod files
  # require each other at vX.Y.Z where upstream's repository has v0.0.0,
  # which would make the go command want to rewrite the root go.mod. Put
  # upstream's v0.0.0 back.
  if [[ ! -f "${dest}/go.work" ]]; then
    local names
    names="$(rbdf::tree::staging_modules "${dest}" | sed 's|^k8s.io/||' | paste -sd'|')"
    find "${dest}/staging/src/k8s.io" -mindepth 2 -maxdepth 2 -name go.mod -print0 |
      xargs -0 sed -i -E "s#(k8s\.io/(${names}|sample-apiserver|sample-controller|sample-cli-plugin)) ${RBDF_STAGING_VERSION//./\.}( |\$)#\1 v0.0.0\3#"
  fi
  # Module zips drop the executable bit: give it back to every script.
  # shellcheck disable=SC2016 # an awk program, not shell
  (cd "${dest}" && find . -path ./.git -prune -o -type f -size -1024k -print0 |
    xargs -0 awk 'FNR == 1 { if ($0 ~ /^#!/) print FILENAME; nextfile }' |
    tr '\n' '\0' | xargs -0 -r chmod +x)
  # Module zips drop symlinks too; upstream's top-level Makefile is one.
  ln -s build/root/Makefile "${dest}/Makefile"
}

# rbdf::tree::series_files prints the patch files of the series in order.
rbdf::tree::series_files() {
  local patch
  [[ -f "${RBDF_PATCHES}/series" ]] || return 0
  while read -r patch; do
    [[ -z "${patch}" || "${patch}" == \#* ]] && continue
    printf '%s\n' "${RBDF_PATCHES}/${patch}"
  done < "${RBDF_PATCHES}/series"
}

# rbdf::tree::rewrites TREE TAG prints each line that a commit above TAG
# removes (or changes) although an earlier commit above TAG added it, as
# "<subject>: <file>:<line>: <text>", and fails if git does. A carried
# series is rebased as a unit, so each patch should be final for its
# concern: a later patch that rewrites an earlier one's line makes both
# harder to carry and to review. Renames count as removals (moving an
# earlier patch's file rewrites it).
rbdf::tree::rewrites() {
  local tree="$1" tag="$2" commits commit subject names file ranges start count blame sha lineno text
  commits="$(rbdf::tree::git "${tree}" rev-list --reverse "${tag}..HEAD")" || return 1
  local -A series=()
  for commit in ${commits}; do series[${commit}]=1; done
  for commit in ${commits}; do
    subject="$(rbdf::tree::git "${tree}" log -1 --format=%s "${commit}")" || return 1
    # Files the commit changes or deletes (-z: no quoting of odd names).
    names="$(rbdf::tree::git "${tree}" diff --no-renames --name-only -z --diff-filter=MD "${commit}^" "${commit}" | tr '\0' '\n')" || return 1
    while IFS= read -r file; do
      [[ -n "${file}" ]] || continue
      # Each hunk's removed range on the parent's side: "start count".
      ranges="$(rbdf::tree::git "${tree}" diff --no-renames -U0 "${commit}^" "${commit}" -- "${file}" |
        awk '/^@@ / { split(substr($2, 2), r, ","); n = (r[2] == "" ? 1 : r[2]); if (n > 0) print r[1], n }')" || return 1
      while read -r start count; do
        [[ -n "${start}" ]] || continue
        blame="$(rbdf::tree::git "${tree}" blame --porcelain -L "${start},+${count}" "${commit}^" -- "${file}" |
          awk '/^[0-9a-f]+ [0-9]+ [0-9]+/ && length($1) == 40 { sha = $1; ln = $3; next }
               /^\t/ { print sha "\t" ln "\t" substr($0, 2) }')" || return 1
        while IFS=$'\t' read -r sha lineno text; do
          [[ -n "${sha}" && -n "${series[${sha}]:-}" ]] || continue
          printf '%s: %s:%s: %s\n' "${subject}" "${file}" "${lineno}" "${text}"
        done <<<"${blame}"
      done <<<"${ranges}"
    done <<<"${names}"
  done
}

# rbdf::tree::export TREE DIR writes the commits above the upstream tag of TREE
# to DIR as format-patch files, with options that make the output stable.
rbdf::tree::export() {
  local tree="$1" dir="$2" tag
  tag="$(rbdf::tree::git "${tree}" describe --tags --abbrev=0 HEAD)"
  rbdf::tree::git "${tree}" format-patch --quiet --zero-commit --no-signature \
    --abbrev=12 --no-numbered --stat=80 -o "${dir}" "${tag}..HEAD" >/dev/null
}

# rbdf::tree::apply TREE FROM applies the series to TREE starting at patch
# number FROM (1-based). On failure it names the patch and the file and
# leaves git am's state for the caller to report. RBDF_AM_FLAGS=-3 lets a
# rebase fall back to a three-way merge, and RBDF_AM_REDUCED_CONTEXT=1 then
# to matching one line of context (reported: review such a hunk).
rbdf::tree::apply() {
  local tree="$1" from="${2:-1}" n=0 patch file
  while read -r patch; do
    n=$((n + 1))
    ((n < from)) && continue
    # shellcheck disable=SC2086 # a list of flags
    if rbdf::tree::git "${tree}" am ${RBDF_AM_FLAGS:-} --committer-date-is-author-date --quiet "${patch}" >&2; then
      continue
    fi
    if [[ "${RBDF_AM_REDUCED_CONTEXT:-}" == 1 ]] &&
      rbdf::tree::git "${tree}" am --show-current-patch=diff |
      rbdf::tree::git "${tree}" apply -C1 --index - >&2 &&
      rbdf::tree::git "${tree}" am --continue --committer-date-is-author-date --quiet >&2; then
      rbdf::log::warning "$(basename "${patch}") applied to ${RBDF_KUBE_VERSION} only with reduced context: review it"
      continue
    fi
    file="$(sed -n 's/^error: patch failed: \(.*\):[0-9]*$/\1/p;s/^error: \(.*\): does not exist in index$/\1/p' \
      "${tree}/.git/rebase-apply/patch-error" 2>/dev/null | head -n1 || true)"
    rbdf::log::error "patch $(basename "${patch}") does not apply to ${RBDF_KUBE_VERSION}${file:+ (${file})}"
    return 1
  done < <(rbdf::tree::series_files)
}

# rbdf::tree::am_help TREE tells how to go on from a stopped git am.
rbdf::tree::am_help() {
  rbdf::log::error "the tree is left as git am left it in $1: resolve, then"
  rbdf::log::error "  git -C $1 am --continue   (or: am --abort to give up)"
  rbdf::log::error "and export with: make update-patches LINE=${RBDF_LINE}"
}

# rbdf::tree::state TREE prints how the existing TREE relates to the series:
# absent, current (same version and series), behind (a prefix of the series
# at the same version), replaceable (clean, holds nothing outside the series)
# or dirty (holds work that is not in the series). "behind N" gives the count.
rbdf::tree::state() {
  local tree="$1" tmp ours theirs i
  if [[ ! -e "${tree}" ]]; then echo absent; return; fi
  if [[ ! -d "${tree}/.git" ]]; then echo dirty; return; fi
  if [[ -d "${tree}/.git/rebase-apply" ]] ||
    [[ -n "$(rbdf::tree::git "${tree}" status --porcelain --untracked-files=normal)" ]]; then
    echo dirty
    return
  fi
  rbdf::util::tmpdir tmp
  rbdf::tree::export "${tree}" "${tmp}"
  mapfile -t ours < <(find "${tmp}" -name '*.patch' | sort)
  mapfile -t theirs < <(rbdf::tree::series_files)
  for i in "${!ours[@]}"; do
    if [[ -z "${theirs[${i}]:-}" ]] || ! cmp -s "${ours[${i}]}" "${theirs[${i}]}"; then
      rbdf::util::tmpdir_rm "${tmp}"
      echo dirty
      return
    fi
  done
  rbdf::util::tmpdir_rm "${tmp}"
  if ! rbdf::tree::git "${tree}" rev-parse -q --verify "refs/tags/${RBDF_KUBE_VERSION}" >/dev/null; then
    echo replaceable
  elif ((${#ours[@]} == ${#theirs[@]})); then
    echo current
  else
    echo "behind $((${#ours[@]} + 1))"
  fi
}

# rbdf::tree::materialise builds RBDF_TREE for the current line, refusing to
# touch a tree that holds work not in the series.
rbdf::tree::materialise() {
  local state tmp
  state="$(rbdf::tree::state "${RBDF_TREE}")"
  case "${state}" in
    current)
      rbdf::log::info "${RBDF_TREE} is ${RBDF_KUBE_VERSION} with the ${RBDF_LINE} series applied"
      return 0
      ;;
    behind*)
      rbdf::log::info "applying the rest of the ${RBDF_LINE} series to ${RBDF_TREE}"
      rbdf::tree::apply "${RBDF_TREE}" "${state#behind }" || {
        rbdf::tree::am_help "${RBDF_TREE}"
        return 1
      }
      return
      ;;
    dirty)
      rbdf::log::error "${RBDF_TREE} holds work that is not in patches/${RBDF_LINE}"
      rbdf::log::error "(uncommitted changes, a git am in progress, or commits not in the series)."
      rbdf::log::error "keep it:    commit, then make update-patches LINE=${RBDF_LINE}"
      rbdf::log::error "discard it: rm -rf ${RBDF_TREE}"
      return 1
      ;;
  esac
  mkdir -p "${RBDF_LINE_OUTPUT}"
  # Next to the tree, so that the finished tree is moved in place; removed
  # as this function returns (a failed assembly is large), or at exit.
  rbdf::util::tmpdir tmp "${RBDF_LINE_OUTPUT}" .kube-tree
  mkdir "${tmp}/kubernetes"
  rbdf::tree::assemble "${tmp}/kubernetes" || {
    rbdf::util::tmpdir_rm "${tmp}"
    return 1
  }
  rbdf::log::info "recording the pristine tree as ${RBDF_KUBE_VERSION}"
  rbdf::tree::git "${tmp}/kubernetes" init --quiet --initial-branch=main
  rbdf::tree::git "${tmp}/kubernetes" add --force --all .
  GIT_AUTHOR_DATE="${RBDF_PRISTINE_DATE}" GIT_COMMITTER_DATE="${RBDF_PRISTINE_DATE}" \
    rbdf::tree::git "${tmp}/kubernetes" commit --quiet --no-verify \
    -m "Kubernetes ${RBDF_KUBE_VERSION} (Go module source with staging ${RBDF_STAGING_VERSION})"
  rbdf::tree::git "${tmp}/kubernetes" tag "${RBDF_KUBE_VERSION}"
  rbdf::tree::apply "${tmp}/kubernetes" 1 || {
    # Keep the failed am for the user to resolve: it becomes the tree.
    rm -rf "${RBDF_TREE}" "${RBDF_STOCK_TREE}"
    mv "${tmp}/kubernetes" "${RBDF_TREE}"
    rbdf::util::tmpdir_rm "${tmp}"
    rbdf::tree::am_help "${RBDF_TREE}"
    return 1
  }
  rm -rf "${RBDF_TREE}" "${RBDF_STOCK_TREE}"
  mv "${tmp}/kubernetes" "${RBDF_TREE}"
  rbdf::util::tmpdir_rm "${tmp}"
  rbdf::log::info "${RBDF_TREE}: ${RBDF_KUBE_VERSION} + $(rbdf::tree::series_files | wc -l) patch(es)"
}

# rbdf::tree::stock makes RBDF_STOCK_TREE a worktree of RBDF_TREE at the
# pristine upstream tag.
rbdf::tree::stock() {
  rbdf::tree::git "${RBDF_TREE}" worktree prune
  if [[ -e "${RBDF_STOCK_TREE}/.git" ]] &&
    [[ "$(rbdf::tree::git "${RBDF_STOCK_TREE}" rev-parse HEAD 2>/dev/null)" == \
       "$(rbdf::tree::git "${RBDF_TREE}" rev-parse "${RBDF_KUBE_VERSION}^{commit}")" ]]; then
    return 0
  fi
  rm -rf "${RBDF_STOCK_TREE}"
  mkdir -p "$(dirname "${RBDF_STOCK_TREE}")"
  rbdf::tree::git "${RBDF_TREE}" worktree add --quiet --detach "${RBDF_STOCK_TREE}" "${RBDF_KUBE_VERSION}"
}

# rbdf::tree::patch_subject PATCH prints the commit subject of a format-patch
# file, unfolded and without the "[PATCH]" prefix.
rbdf::tree::patch_subject() {
  awk '
    /^Subject: / { s = substr($0, 10); insub = 1; next }
    insub && /^[ \t]/ { sub(/^[ \t]+/, " "); s = s $0; next }
    insub { exit }
    END { sub(/^\[PATCH[^]]*\] /, "", s); print s }
  ' "$1"
}

# rbdf::tree::patch_message PATCH prints the commit message body of a
# format-patch file (between the headers and the "---" before the diffstat).
rbdf::tree::patch_message() {
  awk 'body && /^---$/ { exit } body { print } /^$/ && !body { body = 1 }' "$1"
}

# rbdf::tree::patch_stable PATCH prints a format-patch file without the parts
# that change when the change itself does not (hack/update-revision.sh
# digests this):
# - the "From <sha>" line: the commit id changes on every rebase or amend;
# - the diffstat: it is computed from the diff, and its layout is git's;
# - "index" lines: blob ids of whole files change when upstream or an
#   earlier patch changes the file anywhere;
# - the line numbers in hunk headers, for the same reason.
# Context lines and the function named in a hunk header stay. They say where
# the change goes (the same added line in another function is another
# change). When upstream changes the code around a hunk, the change needs a
# review and a new revision.
rbdf::tree::patch_stable() {
  awk '
    NR == 1 && /^From [0-9a-f]+ / { next }
    !diff && !stat && /^---$/ { stat = 1; print; next }
    stat && !/^diff --git / { next }
    /^diff --git / { stat = 0; diff = 1 }
    diff && /^index / { next }
    diff && /^@@ -[0-9]/ { sub(/^@@ -[0-9,]+ \+[0-9,]+ @@/, "@@") }
    { print }
  ' "$1"
}

# rbdf::tree::patch_changes PATCH prints what a format-patch file changes,
# one "PATH<tab>LINE" row per line: the commit message under /COMMIT_MSG,
# then for each file of the diff its added and removed lines, mode, rename
# and binary lines, in order. Context lines, "index" lines and hunk headers
# are left out: they differ between release lines whenever upstream's code
# differs, while the change stays the same (hack/verify-lines.sh). A "\ No
# newline at end of file" is kept only after an added or removed line.
rbdf::tree::patch_changes() {
  awk '
    BEGIN { OFS = "\t" }
    !body && /^$/ { body = 1; msg = 1; next }
    msg && /^---$/ { msg = 0; next }
    msg { print "/COMMIT_MSG", $0; next }
    /^diff --git / {
      # "a/P b/P" names P; a rename or a copy is "OLD->NEW".
      path = substr($0, 12)
      n = (length(path) - 5) / 2
      if (n == int(n) && substr(path, 1, n + 2) == "a/" substr(path, n + 6) && substr(path, n + 3, 3) == " b/") {
        path = substr(path, 3, n)
      } else {
        sub(/^a\//, "", path)
        sub(/ b\//, "->", path)
      }
      file = 1; hunk = 0; last = ""
      next
    }
    !file { next }
    !hunk && (/^index / || /^(dis)?similarity index / || /^--- / || /^\+\+\+ /) { next }
    /^@@ / { hunk = 1; last = ""; next }
    !hunk || /^[-+]/ { print path, $0; last = "change"; next }
    /^\\/ { if (last == "change") print path, $0; next }
    { last = "" }
  ' "$1"
}

# rbdf::tree::dep3_header PATCH prints DEP-3 fields
# (https://dep-team.pages.debian.net/deps/dep3/) for a format-patch file of
# patches/<line>/: Description (the subject, then the message body as
# continuation lines, an empty line as " ."), Origin, Forwarded (not-needed
# for <carry> and <drop>, the pull request for "UPSTREAM: <NNN>:", which is a
# backport of it), Author (From:) and Last-Update (the day of Date:, in the
# patch's own time zone). git mailinfo decodes Subject: and From: (-b: it
# strips only "[PATCH]").
rbdf::tree::dep3_header() {
  local patch="$1" subject info author email date pr origin forwarded
  info="$(GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null git mailinfo -b -u /dev/null /dev/null < "${patch}")"
  subject="$(sed -n 's/^Subject: //p' <<<"${info}")"
  author="$(sed -n 's/^Author: //p' <<<"${info}")"
  email="$(sed -n 's/^Email: //p' <<<"${info}")"
  # "Thu, 26 Nov 2026 12:00:00 +0000" -> 2026-11-26
  date="$(sed -n '/^$/q; s/^Date: //p' "${patch}" | awk '{
    for (i = 2; i < NF; i++) {
      m = index("JanFebMarAprMayJunJulAugSepOctNovDec", $i)
      if (length($i) == 3 && m % 3 == 1) { printf "%04d-%02d-%02d\n", $(i + 1), (m + 2) / 3, $(i - 1); exit }
    }
  }')"
  [[ -n "${subject}" && -n "${author}${email}" && -n "${date}" ]] ||
    { rbdf::log::error "$(basename "${patch}"): no Subject:, From: or Date: to make DEP-3 fields from"; return 1; }
  origin="vendor, ${RBDF_GIT_NAME} patches/$(basename "$(dirname "${patch}")")/$(basename "${patch}")"
  forwarded="not-needed"
  if [[ "${subject}" =~ ^UPSTREAM:\ \<([0-9]+)\>: ]]; then
    pr="https://github.com/kubernetes/kubernetes/pull/${BASH_REMATCH[1]}"
    origin="backport, ${pr}"
    forwarded="${pr}"
  fi
  printf 'Description: %s\n' "${subject}"
  rbdf::tree::patch_message "${patch}" |
    awk 'NF { for (; blank > 0; blank--) print " ."; print " " $0; seen = 1; next } seen { blank++ }'
  printf 'Origin: %s\n' "${origin}"
  printf 'Forwarded: %s\n' "${forwarded}"
  printf 'Author: %s\n' "${author}${email:+ <${email}>}"
  printf 'Last-Update: %s\n' "${date}"
}

# rbdf::tree::dep3_patch PATCH prints a format-patch file as a quilt patch:
# rbdf::tree::dep3_header in place of the mail headers and message, then the
# patch as it is from the "---" that ends the message (as in
# rbdf::tree::patch_message) on: diffstat and diff. patch -p1 and quilt skip
# the fields as they skip a mail's headers.
rbdf::tree::dep3_patch() {
  local patch="$1" header
  header="$(rbdf::tree::dep3_header "${patch}")" || return 1
  grep -qx -- '---' "${patch}" ||
    { rbdf::log::error "$(basename "${patch}"): no \"---\" line: not a format-patch file"; return 1; }
  printf '%s\n' "${header}"
  awk 'body && /^---$/ { diff = 1 } diff { print } /^$/ { body = 1 }' "${patch}"
}

# rbdf::tree::ensure makes RBDF_TREE ready to build and test: materialised
# and current with the series, or, when it holds local work that is not in
# the series yet (the edit-build-test loop), used as it is with a warning.
rbdf::tree::ensure() {
  if [[ -d "${RBDF_TREE}/.git" && ! -d "${RBDF_TREE}/.git/rebase-apply" &&
    "$(rbdf::tree::state "${RBDF_TREE}")" == dirty ]]; then
    rbdf::log::warning "${RBDF_TREE} holds work not in patches/${RBDF_LINE}; using it as it is" \
      "(export it with make update-patches LINE=${RBDF_LINE})"
    return 0
  fi
  rbdf::tree::materialise
}
