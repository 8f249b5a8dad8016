#!/usr/bin/env bash
# Runs the end-to-end suites under test/e2e against the patched tree: a real
# single-node Ceph cluster on 127.0.0.1 (Debian's ceph packages, installed by
# hack/install-deps.sh) driven through the patched RBD plugin.
# WATCH_TIMEOUT sets the OSDs' osd_client_watch_timeout in seconds (default
# 10; Ceph's default is 30). Logs go to _output/e2e/<run>/ and are kept when a
# suite fails.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"
# shellcheck source=hack/lib/test.sh
source "${RBDF_ROOT}/hack/lib/test.sh"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::ensure
run="$(date -u +%Y%m%dT%H%M%SZ)"
export E2E_DIR="${RBDF_OUTPUT}/e2e/${run}"
export WATCH_TIMEOUT="${WATCH_TIMEOUT:-10}"
mkdir -p "${E2E_DIR}"

# shellcheck disable=SC2317 # invoked through rbdf::test::gojson
e2e() {
  local modfile
  modfile="$(rbdf::golang::modfile "${RBDF_TREE}" "patched-${RBDF_LINE}")"
  cd "${RBDF_ROOT}" && GOFLAGS=-mod=mod go test -json -count=1 -timeout 20m -tags "${RBDF_GOTAGS}" \
    -modfile="${modfile}" ./test/e2e/... 2>&1
}

start="$(date +%s)"
rbdf::test::gojson "e2e (${RBDF_LINE}, real Ceph)" "${E2E_DIR}/failed" e2e
cat "${E2E_DIR}"/*-report.md > "${RBDF_OUTPUT}/e2e/report.md" 2>/dev/null || true
echo "- make e2e wall time: $(($(date +%s) - start)) s" >> "${RBDF_OUTPUT}/e2e/report.md"
echo
echo "=== e2e report (${RBDF_OUTPUT}/e2e/report.md)"
cat "${RBDF_OUTPUT}/e2e/report.md"
if [[ -s "${E2E_DIR}/failed" ]]; then
  rbdf::log::error "failed: $(tr '\n' ' ' < "${E2E_DIR}/failed")(logs in ${E2E_DIR})"
else
  rm -rf "${E2E_DIR}"
fi
rbdf::test::summary
