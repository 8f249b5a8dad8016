#!/usr/bin/env bash
# Running test suites and keeping the tally behind "N passed, N failed".

RBDF_TALLY_PASSED=0
RBDF_TALLY_FAILED=0
RBDF_TALLY_LINES=()
# "FAILED <suite>: <test>: <first error line>", listed under the summary so
# that the last lines of a long log say what failed.
RBDF_TALLY_FAILURES=()
# Failures listed by name in the summary; the rest are counted.
readonly RBDF_TALLY_MAX_LISTED=10

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
  local n="${#RBDF_TALLY_FAILURES[@]}"
  if ((n > 0)); then
    printf '%s\n' "${RBDF_TALLY_FAILURES[@]:0:RBDF_TALLY_MAX_LISTED}"
    ((n <= RBDF_TALLY_MAX_LISTED)) || echo "FAILED … and $((n - RBDF_TALLY_MAX_LISTED)) more (see the log above)"
  fi
  echo "${RBDF_TALLY_PASSED} passed, ${RBDF_TALLY_FAILED} failed"
  ((RBDF_TALLY_FAILED == 0))
}

# rbdf::test::testreport builds the go test -json reader once.
rbdf::test::testreport() {
  local bin="${RBDF_OUTPUT}/tools/testreport"
  (cd "${RBDF_ROOT}" && go build -o "${bin}" ./hack/tools/testreport)
  echo "${bin}"
}

# rbdf::test::failure SUITE WHAT lists a failure under the summary.
rbdf::test::failure() {
  RBDF_TALLY_FAILURES+=("FAILED $1: $2")
}

# rbdf::test::gojson SUITE FAILED_FILE CMD... runs CMD (which prints go test
# -json), shows its output, records leaf-test counts under SUITE and writes
# the failing tests to FAILED_FILE (with their first error lines to
# FAILED_FILE.reasons).
rbdf::test::gojson() {
  local suite="$1" failed_file="$2" report tmp counts
  shift 2
  report="$(rbdf::test::testreport)"
  rbdf::util::tmpdir tmp
  counts="${tmp}/counts"
  # The command's exit code is reflected in the counts (a failed package
  # without a failing test counts once), so it is not needed here.
  rm -f "${failed_file}.reasons"
  "$@" | "${report}" -counts "${counts}" -failed "${failed_file}" -reasons "${failed_file}.reasons" || true
  if [[ ! -s "${counts}" || ! -f "${failed_file}.reasons" ]]; then
    echo "0 1 0" > "${counts}"
    echo "the test report was not written (see the log above)" > "${failed_file}.reasons"
  fi
  local reason
  while IFS= read -r reason; do
    rbdf::test::failure "${suite}" "${reason}"
  done < "${failed_file}.reasons"
  read -r p f _ < "${counts}"
  rbdf::util::tmpdir_rm "${tmp}"
  rbdf::test::record "${suite}" "${p}" "${f}"
}
