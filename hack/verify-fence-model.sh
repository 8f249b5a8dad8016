#!/usr/bin/env bash
# Verifies that the fence's interleaving test can fail: each diff in
# test/fence-model/ puts one hole of the first fence back into rbd_fence.go
# (check the watchers, then record "the one watcher"; records not bound to
# their image; a reclaim that warns and hands out), and the test must find
# a violation with it. The diffs reach the compiler through -overlay, so the
# tree is never changed.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/build.sh
source "${RBDF_ROOT}/hack/lib/build.sh"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::ensure
target="${RBDF_TREE}/pkg/volume/rbd/rbd_fence.go"
tmp="" applied=""
rbdf::util::tmpdir tmp
mapfile -t env < <(rbdf::build::upstream_env)
failed=0
for diff in "${RBDF_ROOT}"/test/fence-model/*.diff; do
  name="$(basename "${diff}" .diff)"
  mutated="${tmp}/${name}.go"
  # Exactly where it says: a hunk that only applies elsewhere (an offset)
  # may no longer put back the hole it names.
  if ! applied="$(patch --forward --fuzz=0 -o "${mutated}" "${target}" < "${diff}" 2>&1)" ||
    grep -q '(offset [0-9-]' <<<"${applied}"; then
    rbdf::log::error "${name}: the diff no longer applies exactly to ${target}; refresh it (${applied//$'\n'/ })"
    failed=1
    continue
  fi
  printf '{"Replace":{"%s":"%s"}}\n' "${target}" "${mutated}" > "${tmp}/${name}.json"
  out="${tmp}/${name}.out"
  if (cd "${RBDF_TREE}" && env "${env[@]}" go test -overlay "${tmp}/${name}.json" -count=1 \
    -run '^(TestFenceEveryInterleaving|TestFenceRegressionSchedules)$' ./pkg/volume/rbd/ > "${out}" 2>&1); then
    rbdf::log::error "${name}: the interleaving test passed with a hole of the first fence put back"
    failed=1
    continue
  fi
  if ! grep -q 'violates the fence' "${out}"; then
    rbdf::log::error "${name}: the test failed, but not on a violation:"
    tail -20 "${out}" >&2
    failed=1
    continue
  fi
  rbdf::log::info "${name}: found ($(grep -m1 -o 'violates the fence: .*' "${out}" | cut -c1-160))"
done
rbdf::util::tmpdir_rm "${tmp}"
exit "${failed}"
