#!/usr/bin/env bash
# Runs every hack/verify-*.sh (or the named ones) and reports each. Exit
# non-zero if any fails; each failure says what fixes it.
# Usage: hack/verify.sh [NAME...]   (e.g. hack/verify.sh patches ledger)
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

names=("$@")
if ((${#names[@]} == 0)); then
  mapfile -t names < <(rbdf::verify::names)
fi
# What fixes each check's failure.
declare -A fixes=(
  [patches]="export the tree's commits: make update-patches [LINE=…], or rebase: hack/rebase.sh"
  [commits]="reword the commit in _output/kubernetes, then make update-patches"
  [ledger]="add or fix the patch's entry in PATCHES.md"
  [revision]="bump RBDF_REVISION in hack/lib/lines.sh, then make update-revision"
  [lines]="carry the change on every line (make kube-tree update-patches LINE=…), or list why a line differs in hack/lib/line-differences"
  [gofmt]="gofmt -w the files listed"
  [govet]="fix what go vet reports"
  [shellcheck]="fix what shellcheck reports"
)
passed=0 failed=0
for name in "${names[@]}"; do
  if "${RBDF_ROOT}/hack/verify-${name}.sh"; then
    echo "SUCCESS: verify-${name}"
    passed=$((passed + 1))
  else
    echo "FAILED:  verify-${name} (${fixes[${name}]:-see its error above})"
    failed=$((failed + 1))
  fi
done
echo "verify: ${passed} of $((passed + failed)) checks passed"
((failed == 0))
