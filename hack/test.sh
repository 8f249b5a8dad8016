#!/usr/bin/env bash
# Runs every test the project has for a release line and ends with one line
# "N passed, N failed":
#   - upstream's unit tests of every package the series touches, through
#     upstream's hack/make-rules/test.sh on the patched tree;
#   - our behaviour specs (pkg/...) compiled against the patched tree;
#   - hack/verify.sh, each check counted once;
#   - the end-to-end suites against a real Ceph cluster (hack/test-e2e.sh);
#   - the tests of this tooling (hack/test-tooling.sh).
# RACE=1 turns on the race detector for the Go tests.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"
# shellcheck source=hack/lib/build.sh
source "${RBDF_ROOT}/hack/lib/build.sh"
# shellcheck source=hack/lib/test.sh
source "${RBDF_ROOT}/hack/lib/test.sh"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::materialise
logs="${RBDF_LINE_OUTPUT}/test"
mkdir -p "${logs}"

# Packages whose upstream tests must pass: the ones we always cover, plus
# every package directory a patch of the series touches.
upstream_packages() {
  {
    printf '%s\n' ./pkg/volume/rbd/... ./pkg/volume/util/... ./pkg/controller/volume/attachdetach/...
    rbdf::tree::series_files | xargs -r sed -n 's|^+++ b/\(.*\)/[^/]*\.go$|./\1|p' | grep -v '^./staging/'
  } | sort -u
}

upstream_tests() {
  local -a env
  mapfile -t env < <(rbdf::build::upstream_env)
  local race=""
  [[ "${RACE:-}" == 1 ]] && race="-race"
  env "${env[@]}" KUBE_RACE="${race}" KUBE_TEST_ARGS="-json" \
    make -C "${RBDF_TREE}" test WHAT="$(upstream_packages | xargs)" 2>&1
}

specs() {
  local modfile race=()
  modfile="$(rbdf::golang::modfile "${RBDF_TREE}" patched)"
  [[ "${RACE:-}" == 1 ]] && race=(-race)
  cd "${RBDF_ROOT}" && GOFLAGS=-mod=mod go test -json "${race[@]}" -modfile="${modfile}" ./pkg/... 2>&1
}

echo "=== upstream unit tests on ${RBDF_KUBE_VERSION} + patches/${RBDF_LINE}: $(upstream_packages | xargs)"
rbdf::test::gojson "upstream unit tests (${RBDF_LINE})" "${logs}/upstream.failed" upstream_tests

echo "=== behaviour specs (pkg/...) against the patched tree"
rbdf::test::gojson "behaviour specs (${RBDF_LINE}, patched)" "${logs}/specs.failed" specs

echo "=== fuzz: the rbd status parsers (${FUZZTIME:-15s})"
fuzz() {
  local -a env
  mapfile -t env < <(rbdf::build::upstream_env)
  (cd "${RBDF_TREE}" && env "${env[@]}" go test -run '^$' -fuzz '^FuzzParseRbdStatus$' \
    -fuzztime "${FUZZTIME:-15s}" ./pkg/volume/rbd/)
}
if rbdf::tree::git "${RBDF_TREE}" grep -q '^func FuzzParseRbdStatus' -- pkg/volume/rbd; then
  if fuzz; then
    rbdf::test::record "fuzz FuzzParseRbdStatus" 1 0
  else
    rbdf::test::record "fuzz FuzzParseRbdStatus" 0 1
  fi
fi

echo "=== end-to-end (hack/test-e2e.sh)"
e2e_out="$(mktemp)"
"${RBDF_ROOT}/hack/test-e2e.sh" > >(tee "${e2e_out}") || true
wait
if counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "${e2e_out}" | tail -n1)"; then
  read -r e2e_passed _ e2e_failed _ <<<"${counts//,/}"
  rbdf::test::record "e2e (${RBDF_LINE}, real Ceph)" "${e2e_passed}" "${e2e_failed}"
else
  rbdf::test::record "e2e (${RBDF_LINE}, real Ceph)" 0 1
fi
rm -f "${e2e_out}"

echo "=== verify"
for check in patches commits ledger gofmt govet shellcheck; do
  if "${RBDF_ROOT}/hack/verify.sh" "${check}"; then
    rbdf::test::record "verify-${check}" 1 0
  else
    rbdf::test::record "verify-${check}" 0 1
  fi
done

echo "=== tooling tests"
tooling="$(mktemp)"
rc=0
"${RBDF_ROOT}/hack/test-tooling.sh" > >(tee "${tooling}") || rc=$?
wait
tool_passed="$(grep -c '^PASS: ' "${tooling}" || true)"
tool_failed="$(grep -c '^FAIL: ' "${tooling}" || true)"
# A crash that reported no case still fails the run.
((rc != 0 && tool_failed == 0)) && tool_failed=1
rbdf::test::record "tooling tests (hack/test-tooling.sh)" "${tool_passed}" "${tool_failed}"
rm -f "${tooling}"

rbdf::test::summary
