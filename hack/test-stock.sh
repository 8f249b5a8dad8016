#!/usr/bin/env bash
# The A/B record: runs our behaviour specs against the pristine upstream tree
# and passes only when exactly the rows listed in test/ab/changed-rows.txt
# fail there (the rows the patch set changes) and every other row passes.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"
# shellcheck source=hack/lib/test.sh
source "${RBDF_ROOT}/hack/lib/test.sh"

readonly CHANGED="${RBDF_ROOT}/test/ab/changed-rows.txt"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::ensure
rbdf::tree::stock
logs="${RBDF_LINE_OUTPUT}/test"
mkdir -p "${logs}"

# shellcheck disable=SC2317 # invoked through rbdf::test::gojson
stock_specs() {
  rbdf::golang::go "${RBDF_STOCK_TREE}" "stock-${RBDF_LINE}" test -json -tags "${RBDF_GOTAGS}" ./pkg/... 2>&1
}

echo "=== behaviour specs (pkg/...) against stock ${RBDF_KUBE_VERSION}"
rbdf::test::gojson "specs on stock (${RBDF_LINE})" "${logs}/stock.failed" stock_specs

grep -v -e '^#' -e '^[[:space:]]*$' "${CHANGED}" | sort -u > "${logs}/stock.expected"
sort -u "${logs}/stock.failed" -o "${logs}/stock.failed"
unexpected="$(comm -13 "${logs}/stock.expected" "${logs}/stock.failed")"
missing="$(comm -23 "${logs}/stock.expected" "${logs}/stock.failed")"
echo
echo "=== A/B: rows that fail on stock $(wc -l < "${logs}/stock.failed"), listed as changed $(wc -l < "${logs}/stock.expected")"
rc=0
if [[ -n "${unexpected}" ]]; then
  rbdf::log::error "failing on stock but not listed in test/ab/changed-rows.txt:"
  echo "${unexpected}" >&2
  rc=1
fi
if [[ -n "${missing}" ]]; then
  rbdf::log::error "listed as changed by the fork but passing on stock:"
  echo "${missing}" >&2
  rc=1
fi
if ((rc == 0)); then
  echo "A/B record holds: exactly the $(wc -l < "${logs}/stock.expected") changed rows fail on stock ${RBDF_KUBE_VERSION}"
fi
exit "${rc}"
