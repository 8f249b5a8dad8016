#!/usr/bin/env bash
# Runs every test the project has and ends with one line "N passed, N failed":
#   for the primary line (v1.30):
#   - upstream's unit tests of every package the series touches, through
#     upstream's hack/make-rules/test.sh on the patched tree;
#   - our behaviour specs (pkg/...) compiled against the patched tree;
#   - a short fuzz run of the rbd status parsers;
#   - the end-to-end suites against a real Ceph cluster and control plane
#     (hack/test-e2e.sh);
#   - hack/verify.sh, each check counted once;
#   - the tests of this tooling (hack/test-tooling.sh);
#   for every other line: its upstream unit tests and our specs.
# LINE (or LINES, a list) restricts the line-specific tests; RACE=1 turns on
# the race detector for the Go tests.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"
# shellcheck source=hack/lib/build.sh
source "${RBDF_ROOT}/hack/lib/build.sh"
# shellcheck source=hack/lib/test.sh
source "${RBDF_ROOT}/hack/lib/test.sh"

# Packages whose upstream tests must pass: the ones we always cover, plus
# every package directory a patch of the series touches.
upstream_packages() {
  {
    printf '%s\n' ./pkg/volume/rbd/... ./pkg/volume/util/... ./pkg/controller/volume/attachdetach/...
    rbdf::tree::series_files | xargs -r sed -n 's|^+++ b/\(.*\)/[^/]*\.go$|./\1|p' | grep -v '^./staging/'
  } | sort -u | awk '
    # Drop a package already covered by a "dir/..." pattern.
    { pats[NR] = $0; if ($0 ~ /\/\.\.\.$/) tree[substr($0, 1, length($0) - 4)] = 1 }
    END {
      for (i = 1; i <= NR; i++) {
        p = pats[i]; covered = 0
        for (t in tree) if (p != t "/..." && (p == t || index(p, t "/") == 1)) covered = 1
        if (!covered) print p
      }
    }'
}

# shellcheck disable=SC2317 # invoked through rbdf::test::gojson
upstream_tests() {
  local -a env
  mapfile -t env < <(rbdf::build::upstream_env)
  local race=""
  [[ "${RACE:-}" == 1 ]] && race="-race"
  if [[ -f "${RBDF_TREE}/go.work" ]]; then
    env "${env[@]}" KUBE_RACE="${race}" KUBE_TEST_ARGS="-json" \
      make -C "${RBDF_TREE}" test WHAT="$(upstream_packages | xargs)" 2>&1
  else
    # Before v1.30 upstream's test.sh runs in GOPATH mode over vendor/,
    # which the module zips do not carry: run the same packages' tests with
    # the go command in module mode.
    # shellcheck disable=SC2046 # one word per package pattern
    (cd "${RBDF_TREE}" && env "${env[@]}" GO111MODULE=on go test -json ${race} -timeout 180s \
      $(upstream_packages) 2>&1)
  fi
}

# shellcheck disable=SC2317 # invoked through rbdf::test::gojson
specs() {
  local race=()
  [[ "${RACE:-}" == 1 ]] && race=(-race)
  rbdf::golang::go "${RBDF_TREE}" "patched-${RBDF_LINE}" test -json "${race[@]}" -tags "${RBDF_GOTAGS}" \
    ./pkg/... 2>&1
}

fuzz() {
  local -a env
  local corpus="${RBDF_TREE}/pkg/volume/rbd/testdata/fuzz" kept="${RBDF_OUTPUT}/test/fuzz-failures"
  mapfile -t env < <(rbdf::build::upstream_env)
  if (cd "${RBDF_TREE}" && env "${env[@]}" go test -run '^$' -fuzz '^FuzzParseRbdStatus$' \
    -fuzztime "${FUZZTIME:-15s}" ./pkg/volume/rbd/); then
    return 0
  fi
  # go test writes the failing input into the package; move it out so the
  # tree stays clean for the checks that follow, and say where it went.
  if [[ -d "${corpus}" ]]; then
    mkdir -p "${kept}"
    cp -r "${corpus}/." "${kept}/"
    rm -rf "${RBDF_TREE}/pkg/volume/rbd/testdata"
    rbdf::log::error "fuzz: failing input kept in ${kept}; add it to the parser's table test"
  fi
  return 1
}

# check NAME CMD... records CMD's exit status as one passed or failed check.
check() {
  local name="$1"
  shift
  if "$@"; then
    rbdf::test::record "${name}" 1 0
  else
    rbdf::test::record "${name}" 0 1
    rbdf::test::failure "${name}" "exit status non-zero (see the log above)"
  fi
}

# suite NAME SCRIPT runs a script that ends with "N passed, N failed" and
# records its counts and its listed failures (one failure if it printed no
# counts).
suite() {
  local name="$1" tmp out counts p f listed
  shift
  rbdf::util::tmpdir tmp
  out="${tmp}/out"
  "$@" > >(tee "${out}") || true
  wait
  if counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "${out}" | tail -n1)"; then
    read -r p _ f _ <<<"${counts//,/}"
    rbdf::test::record "${name}" "${p}" "${f}"
    while IFS= read -r listed; do
      RBDF_TALLY_FAILURES+=("${listed}")
    done < <(grep '^FAILED ' "${out}" || true)
  else
    rbdf::test::record "${name}" 0 1
    rbdf::test::failure "${name}" "no \"N passed, N failed\" line (see the log above)"
  fi
  rbdf::util::tmpdir_rm "${tmp}"
}

for line in ${LINES:-${LINE:-$(rbdf::lines::list)}}; do
  rbdf::lines::setup "${line}"
  logs="${RBDF_LINE_OUTPUT}/test"
  mkdir -p "${logs}"
  if ! rbdf::tree::ensure; then
    rbdf::test::record "kube-tree (${line})" 0 1
    continue
  fi

  echo "=== upstream unit tests on ${RBDF_KUBE_VERSION} + patches/${line}: $(upstream_packages | xargs)"
  rbdf::test::gojson "upstream unit tests (${line})" "${logs}/upstream.failed" upstream_tests

  echo "=== behaviour specs (pkg/...) against the patched ${line} tree"
  rbdf::test::gojson "behaviour specs (${line})" "${logs}/specs.failed" specs

  [[ "${line}" == "${RBDF_PRIMARY_LINE}" ]] || continue

  if rbdf::tree::git "${RBDF_TREE}" grep -q '^func FuzzParseRbdStatus' -- pkg/volume/rbd; then
    echo "=== fuzz: the rbd status parsers (${FUZZTIME:-15s})"
    check "fuzz FuzzParseRbdStatus (${line})" fuzz
  fi

  echo "=== end-to-end (hack/test-e2e.sh)"
  suite "e2e (${line}, Ceph + control plane)" env LINE="${line}" "${RBDF_ROOT}/hack/test-e2e.sh"
done

echo "=== verify"
while read -r name; do
  check "verify-${name}" "${RBDF_ROOT}/hack/verify.sh" "${name}"
done < <(rbdf::verify::names)

echo "=== tooling tests"
tooling_tmp=""
rbdf::util::tmpdir tooling_tmp
tooling="${tooling_tmp}/tooling.log"
rc=0
"${RBDF_ROOT}/hack/test-tooling.sh" > >(tee "${tooling}") || rc=$?
wait
tool_passed="$(grep -c '^PASS: ' "${tooling}" || true)"
tool_failed="$(grep -c '^FAIL: ' "${tooling}" || true)"
# A crash that reported no case still fails the run.
if ((rc != 0 && tool_failed == 0)); then
  tool_failed=1
  rbdf::test::failure "tooling tests" "exited ${rc} before reporting a failing case"
fi
rbdf::test::record "tooling tests (hack/test-tooling.sh)" "${tool_passed}" "${tool_failed}"
while IFS= read -r case; do
  rbdf::test::failure "tooling tests" "${case#FAIL: }"
done < <(grep '^FAIL: ' "${tooling}" || true)
rbdf::util::tmpdir_rm "${tooling_tmp}"

rbdf::test::summary
