#!/usr/bin/env bash
# Runs every hack/verify-*.sh and reports each. Exit non-zero if any fails.
# Usage: hack/verify.sh [NAME...]   (e.g. hack/verify.sh patches ledger)
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

names=("$@")
if ((${#names[@]} == 0)); then
  names=(patches commits ledger gofmt govet shellcheck)
fi
passed=0 failed=0
for name in "${names[@]}"; do
  if "${RBDF_ROOT}/hack/verify-${name}.sh"; then
    echo "SUCCESS: verify-${name}"
    passed=$((passed + 1))
  else
    echo "FAILED:  verify-${name}"
    failed=$((failed + 1))
  fi
done
echo "verify: ${passed} of $((passed + failed)) checks passed"
((failed == 0))
