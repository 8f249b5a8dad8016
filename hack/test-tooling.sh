#!/usr/bin/env bash
# Tests of the patch-queue tooling itself. Each case runs the real scripts on
# a scratch copy of the repository (hack/, patches/, PATCHES.md, go.mod) with
# a clone of the primary line's materialised tree, breaks one thing and
# checks that the right script fails and says why (among them a patch that
# rewrites an earlier one's line; the revision and the lines' checks need no
# tree: a patch changed under the same revision, a fix made on the primary
# line only); two cases check the test report and
# summary on a recorded go test -json stream, some the helpers of hack/lib
# (temporary directories, DEP-3 fields), and one make help's list. Prints
# PASS:/FAIL: lines.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/test.sh
source "${RBDF_ROOT}/hack/lib/test.sh"

rbdf::lines::setup "${RBDF_PRIMARY_LINE}"
[[ -d "${RBDF_TREE}/.git" ]] || rbdf::tree::materialise >/dev/null
first_patch="$(rbdf::tree::series_files | head -n1)"
[[ -n "${first_patch}" ]] || rbdf::log::fatal "the ${RBDF_LINE} series is empty: nothing to test"
first_patch="$(basename "${first_patch}")"

scratch=""
rbdf::util::tmpdir scratch
failures=0

# fresh_copy [clone] makes ${scratch}/repo a copy of the project. Its trees
# are links to the real ones (the verify scripts only read them), or with
# "clone" the primary line's tree is a clone that a case may change.
fresh_copy() {
  rm -rf "${scratch}/repo"
  mkdir -p "${scratch}/repo/_output"
  cp -R "${RBDF_ROOT}/hack" "${RBDF_ROOT}/patches" "${RBDF_ROOT}/PATCHES.md" \
    "${RBDF_ROOT}/go.mod" "${RBDF_ROOT}/go.sum" "${scratch}/repo/"
  local line
  for line in $(rbdf::lines::list); do
    [[ "${line}" == "${RBDF_PRIMARY_LINE}" ]] && continue
    [[ -d "${RBDF_OUTPUT}/${line}/kubernetes" ]] || continue
    mkdir -p "${scratch}/repo/_output/${line}"
    ln -s "${RBDF_OUTPUT}/${line}/kubernetes" "${scratch}/repo/_output/${line}/kubernetes"
  done
  if [[ "${1:-}" == clone ]]; then
    git clone --quiet --shared "${RBDF_TREE}" "${scratch}/repo/_output/kubernetes"
  else
    ln -s "${RBDF_TREE}" "${scratch}/repo/_output/kubernetes"
  fi
}

# expect NAME WANT_RC PATTERN CMD... runs CMD in the copy and checks that it
# exits with WANT_RC ("fail" = any non-zero) and prints PATTERN.
expect() {
  local name="$1" want="$2" pattern="$3" out rc=0
  shift 3
  out="$(cd "${scratch}/repo" && "$@" 2>&1)" || rc=$?
  if { [[ "${want}" == fail && ${rc} -ne 0 ]] || [[ "${want}" == "${rc}" ]]; } &&
    grep -q -- "${pattern}" <<<"${out}"; then
    echo "PASS: ${name}"
  else
    echo "FAIL: ${name} (exit ${rc}, want ${want}; output lacks '${pattern}')"
    tail -n 20 <<<"${out}" | while IFS= read -r l; do echo "    | ${l}"; done
    failures=$((failures + 1))
  fi
}

fresh_copy
expect "verify passes on the committed series" 0 "3 of 3 checks passed" \
  hack/verify.sh patches commits ledger

fresh_copy
# Change one context line of the first hunk: the patch no longer applies.
awk 'done || !/^ / || !hunk { if (/^@@ /) hunk = 1; print; next }
     { print " // no longer upstream"; done = 1 }' \
  "${RBDF_ROOT}/patches/${RBDF_LINE}/${first_patch}" > "${scratch}/p"
cp "${scratch}/p" "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-patches fails on a patch that no longer applies, naming it" fail \
  "patch ${first_patch} does not apply" hack/verify-patches.sh

fresh_copy
# Edit an added line of code in a file the patch adds (no later patch has
# it as context): it still applies, but is not what git exports.
awk '!done && /^new file mode/ { infile = 1 } infile && !done && /^\+[^+].*[a-z]/ { $0 = $0 "_edited"; done = 1 } { print }' \
  "${RBDF_ROOT}/patches/${RBDF_LINE}/${first_patch}" > "${scratch}/p"
cp "${scratch}/p" "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-patches fails on a hand-edited patch" fail \
  "differs from a fresh export" hack/verify-patches.sh

fresh_copy
subject="$(rbdf::tree::patch_subject "${RBDF_ROOT}/patches/${RBDF_LINE}/${first_patch}")"
awk -v h="## ${subject}" '$0 == h { skip = 1; next } skip && /^## / { skip = 0 } !skip' \
  "${RBDF_ROOT}/PATCHES.md" > "${scratch}/repo/PATCHES.md"
expect "verify-ledger fails on a missing PATCHES.md entry" fail \
  "PATCHES.md has no entry" hack/verify-ledger.sh

fresh_copy
sed -i 's/^Signed-off-by: .*$//' "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-commits fails on a patch without Signed-off-by" fail \
  "no Signed-off-by" hack/verify-commits.sh

fresh_copy
sed -i '0,/^Subject: \[PATCH\] UPSTREAM: <carry>:/s//Subject: [PATCH] UPSTREAM: <drop>:/' "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-commits accepts the carry vocabulary (<drop>)" 0 "" hack/verify-commits.sh

fresh_copy
sed -i '0,/^Subject: \[PATCH\] UPSTREAM: <carry>:/s//Subject: [PATCH] UPSTREAM: <keep>:/' "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-commits refuses another subject and lists the accepted forms" fail \
  "UPSTREAM: <12345>: <area>: <summary>" hack/verify-commits.sh

fresh_copy
expect "verify-revision and verify-lines pass on the committed series" 0 "2 of 2 checks passed" \
  hack/verify.sh revision lines

fresh_copy
# A changed patch is a new revision: verify-revision fails until
# RBDF_REVISION is bumped and recorded, and update-revision refuses to record
# the change under the old revision.
next_revision=$((RBDF_REVISION + 1))
sed -i '0,/^+[^+].*[a-z]/s//&_changed/' "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-revision fails on a changed patch with RBDF_REVISION unchanged" fail \
  "bump RBDF_REVISION in hack/lib/lines.sh to ${next_revision}" hack/verify-revision.sh
expect "update-revision refuses to record a changed series without a bump" fail \
  "RBDF_REVISION is still ${RBDF_REVISION}" hack/update-revision.sh
sed -i "s/^readonly RBDF_REVISION=${RBDF_REVISION}\$/readonly RBDF_REVISION=${next_revision}/" "${scratch}/repo/hack/lib/lines.sh"
expect "verify-revision fails on a bump that is not recorded" fail \
  "RBDF_REVISION is ${next_revision}, but the series are recorded for revision ${RBDF_REVISION}" hack/verify-revision.sh
expect "update-revision records the bumped revision" 0 "recorded revision ${next_revision}" hack/update-revision.sh
expect "verify-revision passes once the bump is recorded" 0 "" hack/verify-revision.sh

fresh_copy
# What moves without the change changing: the commit id, the diffstat, blob
# ids and hunk line numbers.
sed -i -e '1s/^From [0-9a-f]*/From 0123456789abcdef0123456789abcdef01234567/' \
  -e '0,/^diff --git /{/^ .* | *[0-9]* /s/$/+/}' \
  -e 's/^index [0-9a-f]*\.\.[0-9a-f]*/index 0123456789ab..ba9876543210/' \
  -e 's/^@@ -\([0-9]\)/@@ -9\1/' "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
if cmp -s "${RBDF_ROOT}/patches/${RBDF_LINE}/${first_patch}" "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"; then
  echo "FAIL: the planted commit id, diffstat, blob ids and hunk line numbers changed nothing"
  failures=$((failures + 1))
fi
expect "verify-revision ignores commit and blob ids, the diffstat and hunk line numbers" 0 "" \
  hack/verify-revision.sh

# The lines: every other line carries the primary line's changes.
other_line="$(rbdf::lines::list | grep -vx "${RBDF_PRIMARY_LINE}" | tail -n1)"
fresh_copy
# A fix made in patches/v1.30 only.
sed -i '0,/^+[^+].*[a-z]/s//&_fixed/' "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
fixed_file="$(awk '/^diff --git / { f = $NF; sub(/^b\//, "", f) } /^\+.*_fixed/ { print f; exit }' \
  "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}")"
expect "verify-lines fails on a fix made in patches/${RBDF_LINE} only, naming the patch and the file" fail \
  "${other_line}/${first_patch}: ${fixed_file}: the added and removed lines differ" hack/verify-lines.sh
expect "verify-lines shows the differing lines" fail "^-+.*_fixed" hack/verify-lines.sh
# Listed with the digest verify-lines prints, the difference is accepted;
# listed where there is none, the entry is stale.
allow="$(cd "${scratch}/repo" && hack/verify-lines.sh 2>&1 |
  sed -n 's|.*list it in hack/lib/line-differences: \(.*\) <why>$|\1 planted by hack/test-tooling.sh|p')" || true
printf '%s\n' "${allow}" >> "${scratch}/repo/hack/lib/line-differences"
expect "verify-lines accepts a difference listed in hack/lib/line-differences" 0 \
  "as hack/lib/line-differences:" hack/verify-lines.sh
cp "${RBDF_ROOT}/patches/${RBDF_LINE}/${first_patch}" "${scratch}/repo/patches/${RBDF_LINE}/${first_patch}"
expect "verify-lines fails on a listed difference that is gone" fail \
  "matches no difference: remove it" hack/verify-lines.sh

fresh_copy
# Upstream's code around a hunk differs between lines: context lines, blob
# ids and hunk headers may differ.
awk 'done || !/^ / || !hunk { if (/^@@ /) hunk = 1; print; next }
     { print " // upstream differs here"; done = 1 }' \
  "${RBDF_ROOT}/patches/${other_line}/${first_patch}" |
  sed -e 's/^index [0-9a-f]*\.\.[0-9a-f]*/index 0123456789ab..ba9876543210/' \
    -e 's/^\(@@ -\)\([0-9]\)\(.*@@\).*$/\19\2\3 func elsewhere()/' > "${scratch}/p"
cp "${scratch}/p" "${scratch}/repo/patches/${other_line}/${first_patch}"
expect "verify-lines ignores context lines, blob ids and hunk headers" 0 "" hack/verify-lines.sh

fresh_copy
sed -i '$d' "${scratch}/repo/patches/${other_line}/series"
expect "verify-lines fails on a line whose series lacks a patch" fail \
  "${other_line}: the series does not carry ${RBDF_PRIMARY_LINE}'s patches" hack/verify-lines.sh

# make help lists every target of the Makefile, with a description.
rules="$(sed -n 's/^\([A-Za-z][A-Za-z0-9_.-]*\):\([^=].*\)\{0,1\}$/\1/p' "${RBDF_ROOT}/Makefile" | LC_ALL=C sort)"
helped="$("${RBDF_ROOT}/hack/make-help.sh" | sed -n '/^Targets:$/,/^$/s/^  \([^ ]*\)  *[^ ].*$/\1/p' | LC_ALL=C sort)"
if [[ -n "${rules}" && "${helped}" == "${rules}" ]]; then
  echo "PASS: make help describes every target of the Makefile"
else
  echo "FAIL: make help describes ${helped//$'\n'/ }; the Makefile's targets are ${rules//$'\n'/ } (a comment line right above each rule describes it)"
  failures=$((failures + 1))
fi

# make verify and make test run the same checks: every hack/verify-*.sh.
want="$(find "${RBDF_ROOT}/hack" -maxdepth 1 -name 'verify-*.sh' -printf '%f\n' | sed 's/^verify-//; s/\.sh$//' | LC_ALL=C sort)"
got="$(rbdf::verify::names | LC_ALL=C sort)"
if [[ -n "${want}" && "${got}" == "${want}" ]]; then
  echo "PASS: verify's list of checks is every hack/verify-*.sh"
else
  echo "FAIL: verify's list of checks is every hack/verify-*.sh (got: ${got//$'\n'/ }; want: ${want//$'\n'/ })"
  failures=$((failures + 1))
fi

# rbdf::util::tmpdir: what a script made (in TMPDIR, in a parent, in a
# subshell) is gone however it ends (exit 1, rbdf::log::fatal, the end), the
# exit status is kept, and a subshell removes only its own directory.
cat > "${scratch}/tmpdir-case.sh" <<'SCRIPT'
set -euo pipefail
# shellcheck source=/dev/null
source "$1"
rbdf::util::tmpdir a
rbdf::util::tmpdir b "$(dirname "$2")" .case
printf '%s\n' "${a}" "${b}" >> "$2"
c="$(rbdf::util::tmpdir c; echo "${c}")"
printf '%s\n' "${c}" >> "$2"
[[ ! -e "${c}" && -d "${a}" && -d "${b}" ]] && echo "the subshell removed its own directory only"
eval "$3"
SCRIPT
for how in "exit 1" "rbdf::log::fatal stop" ":"; do
  want=1
  [[ "${how}" == : ]] && want=0
  : > "${scratch}/tmpdirs"
  rc=0
  out="$(bash "${scratch}/tmpdir-case.sh" "${RBDF_ROOT}/hack/lib/init.sh" "${scratch}/tmpdirs" "${how}" 2>&1)" || rc=$?
  left="$(while read -r d; do [[ ! -e "${d}" ]] || echo "${d}"; done < "${scratch}/tmpdirs")"
  if ((rc == want)) && [[ -z "${left}" && "$(wc -l < "${scratch}/tmpdirs")" == 3 ]] &&
    grep -q "removed its own directory only" <<<"${out}"; then
    echo "PASS: rbdf::util::tmpdir leaves nothing behind (${how})"
  else
    echo "FAIL: rbdf::util::tmpdir (${how}): exit ${rc}, want ${want}; left: ${left//$'\n'/ }"
    while IFS= read -r l; do echo "    | ${l}"; done <<<"${out}"
    failures=$((failures + 1))
  fi
done

fresh_copy
expect "kube-tree rejects an unknown LINE and lists the supported ones" fail \
  "unknown LINE 'v1.99'; supported lines: v1.30 v1.29 v1.28" hack/kube-tree.sh v1.99
if [[ -e "${scratch}/repo/_output/v1.99" ]]; then
  echo "FAIL: kube-tree wrote _output/v1.99 for an unknown LINE"
  failures=$((failures + 1))
fi

fresh_copy clone
echo "// local work" >> "${scratch}/repo/_output/kubernetes/pkg/volume/rbd/rbd.go"
expect "kube-tree refuses a tree with uncommitted changes" fail \
  "make update-patches" hack/kube-tree.sh
if grep -q '^// local work$' "${scratch}/repo/_output/kubernetes/pkg/volume/rbd/rbd.go"; then
  echo "PASS: the uncommitted change survives"
else
  echo "FAIL: kube-tree destroyed an uncommitted change"
  failures=$((failures + 1))
fi

fresh_copy clone
echo "// local work" >> "${scratch}/repo/_output/kubernetes/pkg/volume/rbd/rbd.go"
rbdf::tree::git "${scratch}/repo/_output/kubernetes" commit --quiet -am "UPSTREAM: <carry>: rbd: local work"
expect "kube-tree refuses a tree with commits not in the series" fail \
  "commits not in the series" hack/kube-tree.sh
expect "update-patches exports the new commit" 0 \
  "exported $(($(rbdf::tree::series_files | wc -l) + 1)) patch(es)" hack/update-patches.sh
expect "kube-tree accepts the tree once exported" 0 "series applied" hack/kube-tree.sh

fresh_copy clone
# A later patch that changes a line the first patch added: the series still
# applies and exports, but the first patch is no longer final.
tree="${scratch}/repo/_output/kubernetes"
# (awk reads to the end: a reader that stops early would SIGPIPE git.)
first_commit="$(rbdf::tree::git "${tree}" rev-list --reverse "${RBDF_KUBE_VERSION}..HEAD" | awk 'NR == 1')"
added_file="$(rbdf::tree::git "${tree}" show --diff-filter=A --name-only --format= "${first_commit}" | awk '/\.go$/ && !f { print; f = 1 }')"
sed -i '0,/^func /s/^func .*$/& \/\/ planted/' "${tree}/${added_file}"
rbdf::tree::git "${tree}" commit --quiet -am "UPSTREAM: <carry>: rbd: planted rewrite"
(cd "${scratch}/repo" && hack/update-patches.sh >/dev/null 2>&1)
expect "verify-patches fails on a patch that rewrites a line an earlier patch added, naming it" fail \
  "UPSTREAM: <carry>: rbd: planted rewrite: ${added_file}:" hack/verify-patches.sh

# The test report counts leaf tests and names each failure with its first
# error line (or the package's panic); the summary lists them above its last
# line, so the tail of a long log says what failed.
report="$(rbdf::test::testreport)"
cat > "${scratch}/events.json" <<'JSON'
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"run","Package":"p","Test":"TestA/sub"}
{"Action":"output","Package":"p","Test":"TestA/sub","Output":"    a_test.go:7: want 1, got 2\n"}
{"Action":"output","Package":"p","Test":"TestA/sub","Output":"    a_test.go:9: second error\n"}
{"Action":"fail","Package":"p","Test":"TestA/sub"}
{"Action":"fail","Package":"p","Test":"TestA"}
{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"pass","Package":"p","Test":"TestB"}
{"Action":"fail","Package":"p"}
{"Action":"run","Package":"q","Test":"TestC"}
{"Action":"output","Package":"q","Test":"TestC","Output":"panic: boom\n"}
{"Action":"fail","Package":"q"}
JSON
"${report}" -counts "${scratch}/counts" -failed "${scratch}/failed" -reasons "${scratch}/reasons" \
  < "${scratch}/events.json" > /dev/null
if [[ "$(cat "${scratch}/counts")" == "1 2 0" ]] &&
  grep -qx 'p TestA/sub: a_test.go:7: want 1, got 2' "${scratch}/reasons" &&
  grep -qx 'q TestC: panic: boom' "${scratch}/reasons" &&
  [[ "$(cat "${scratch}/failed")" == $'p TestA/sub\nq TestC' ]]; then
  echo "PASS: the test report counts leaf tests and gives each failure its first error line"
else
  echo "FAIL: the test report's counts or reasons are wrong"
  cat "${scratch}/counts" "${scratch}/failed" "${scratch}/reasons" | while IFS= read -r l; do echo "    | ${l}"; done
  failures=$((failures + 1))
fi
summary="$(
  # shellcheck disable=SC2317 # invoked through rbdf::test::gojson
  events() { cat "${scratch}/events.json"; }
  rbdf::test::gojson "s" "${scratch}/s.failed" events > /dev/null
  rbdf::test::summary || true
)"
if [[ "$(tail -n 3 <<<"${summary}")" == $'FAILED s: p TestA/sub: a_test.go:7: want 1, got 2\nFAILED s: q TestC: panic: boom\n1 passed, 2 failed' ]]; then
  echo "PASS: the summary lists each failure above its last line"
else
  echo "FAIL: the summary does not list the failures"
  while IFS= read -r l; do echo "    | ${l}"; done <<<"${summary}"
  failures=$((failures + 1))
fi

fresh_copy
# make dist's quilt folder applies with quilt to the unpacked upstream source
# of the line and gives the same files as the materialised tree.
expect "make dist packs the tarball and the quilt folders" 0 "patches)" hack/dist.sh
# Each quilt patch opens with DEP-3 fields and goes on with the committed
# patch from its "---" (diffstat and diff) unchanged.
bad=()
for f in "${scratch}"/repo/_output/dist/*/patches/*.patch; do
  line="$(basename "$(dirname "$(dirname "${f}")")")"
  header="$(sed '/^---$/q' "${f}")"
  for field in 'Description: UPSTREAM: ' 'Origin: (vendor|backport), ' 'Forwarded: (not-needed|https://)' \
    'Author: .+ <.+@.+>$' 'Last-Update: [0-9]{4}-[0-9]{2}-[0-9]{2}$'; do
    grep -qE "^${field}" <<<"${header}" || bad+=("${line}/$(basename "${f}") lacks ${field%%:*}")
  done
  cmp -s <(sed -n '/^---$/,$p' "${f}") <(sed -n '/^---$/,$p' "${RBDF_ROOT}/patches/${line}/$(basename "${f}")") ||
    bad+=("${line}/$(basename "${f}"): the diff is not the committed one")
done
if ((${#bad[@]} == 0)) && compgen -G "${scratch}/repo/_output/dist/*/patches/*.patch" >/dev/null; then
  echo "PASS: make dist's quilt patches carry DEP-3 fields before the unchanged diff"
else
  echo "FAIL: make dist's quilt patches lack DEP-3 fields or changed the diff"
  printf '    | %s\n' "${bad[@]}"
  failures=$((failures + 1))
fi
mkdir -p "${scratch}/src"
rbdf::tree::git "${RBDF_TREE}" archive "${RBDF_KUBE_VERSION}" | tar -x -C "${scratch}/src"
cp -R "${scratch}/repo/_output/dist/${RBDF_LINE}/patches" "${scratch}/src/"
if (cd "${scratch}/src" && QUILT_PATCHES=patches quilt push -a -q >/dev/null 2>&1); then
  differ=0
  while read -r f; do
    cmp -s "${scratch}/src/${f}" "${RBDF_TREE}/${f}" || { echo "    | ${f} differs"; differ=1; }
  done < <(rbdf::tree::series_files | xargs sed -n 's|^+++ b/||p' | sort -u)
  if ((differ == 0)); then
    echo "PASS: quilt push -a applies the ${RBDF_LINE} quilt folder to the upstream source"
  else
    echo "FAIL: quilt's result differs from the materialised tree"
    failures=$((failures + 1))
  fi
else
  echo "FAIL: quilt push -a did not apply the ${RBDF_LINE} quilt folder"
  failures=$((failures + 1))
fi

fresh_copy clone
# Move the primary line to another patch release and back: the series must
# apply there, and coming back must give the committed patches again.
readonly REBASE_TO="${RBDF_REBASE_TEST_VERSION:-v1.30.4}"
cp -R "${scratch}/repo/patches" "${scratch}/patches.orig"
expect "rebase.sh moves ${RBDF_LINE} to ${REBASE_TO}" 0 "now carries" \
  hack/rebase.sh "${RBDF_LINE}" "${REBASE_TO}"
if grep -q "^  \[${RBDF_LINE}\]=${REBASE_TO}$" "${scratch}/repo/hack/lib/lines.sh"; then
  echo "PASS: rebase.sh pins ${RBDF_LINE} to ${REBASE_TO}"
else
  echo "FAIL: rebase.sh did not pin ${RBDF_LINE} to ${REBASE_TO}"
  failures=$((failures + 1))
fi
expect "rebase.sh moves ${RBDF_LINE} back to ${RBDF_KUBE_VERSION}" 0 "now carries" \
  hack/rebase.sh "${RBDF_LINE}" "${RBDF_KUBE_VERSION}"
if diff -r "${scratch}/patches.orig" "${scratch}/repo/patches" >/dev/null &&
  cmp -s "${RBDF_ROOT}/hack/lib/lines.sh" "${scratch}/repo/hack/lib/lines.sh"; then
  echo "PASS: the round trip gives the committed series and line table back"
else
  echo "FAIL: the round trip changed the series or the line table"
  failures=$((failures + 1))
fi

((failures == 0))
