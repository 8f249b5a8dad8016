#!/usr/bin/env bash
# Running test suites and keeping the tally behind "N passed, N failed".

RBDF_TALLY_PASSED=0
RBDF_TALLY_FAILED=0
RBDF_TALLY_LINES=()

# rbdf::test::record SUITE PASSED FAILED adds a suite's counts to the tally.
rbdf::test::record() {
  RBDF_TALLY_PASSED=$((RBDF_TALLY_PASSED + $2))
  RBDF_TALLY_FAILED=$((RBDF_TALLY_FAILED + $3))
  RBDF_TALLY_LINES+=("$(printf '%-44s %5d passed %5d failed' "$1" "$2" "$3")")
}

# rbdf::test::summary prints every suite and the closing line; it returns
# non-zero when anything failed.
rbdf::test::summary() {
  echo
  echo "=== summary"
  printf '%s\n' "${RBDF_TALLY_LINES[@]}"
  echo "${RBDF_TALLY_PASSED} passed, ${RBDF_TALLY_FAILED} failed"
  ((RBDF_TALLY_FAILED == 0))
}

# rbdf::test::testreport builds the go test -json reader once.
rbdf::test::testreport() {
  local bin="${RBDF_OUTPUT}/tools/testreport"
  (cd "${RBDF_ROOT}" && go build -o "${bin}" ./hack/tools/testreport)
  echo "${bin}"
}

# rbdf::test::gojson SUITE FAILED_FILE CMD... runs CMD (which prints go test
# -json), shows its output, records leaf-test counts under SUITE and writes
# the failing tests to FAILED_FILE.
rbdf::test::gojson() {
  local suite="$1" failed_file="$2" report counts
  shift 2
  report="$(rbdf::test::testreport)"
  counts="$(mktemp)"
  # The command's exit code is reflected in the counts (a failed package
  # without a failing test counts once), so it is not needed here.
  "$@" | "${report}" -counts "${counts}" -failed "${failed_file}" || true
  if [[ ! -s "${counts}" ]]; then
    echo "0 1 0" > "${counts}"
  fi
  read -r p f _ < "${counts}"
  rm -f "${counts}"
  rbdf::test::record "${suite}" "${p}" "${f}"
}
