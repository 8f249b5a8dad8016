#!/usr/bin/env bash
# Runs the end-to-end suites under test/e2e against the patched tree, on
# real single-node Ceph clusters (Debian's ceph packages, installed by
# hack/install-deps.sh):
#   test/e2e/node      the patched RBD plugin's watcher gate and fence against
#                      Ceph (and the frozen-holder hazard with the stock one);
#   test/e2e/kubelet   the node-failure scenarios on a real control plane
#                      (etcd, kube-apiserver, the stock or the patched
#                      kube-controller-manager) with the real stock and
#                      patched kubelets, each node in network and mount
#                      namespaces and a freezer cgroup of its own.
# It first builds what they need: kube-apiserver, kubelet and
# kube-controller-manager from the patched and the stock tree, etcd at the
# version the tree pins, the fake runtime and the rbd shim.
# WATCH_TIMEOUT sets the OSDs' osd_client_watch_timeout in seconds (default
# 10; Ceph's default is 30); NODE_MONITOR_GRACE_PERIOD the controller's (10;
# upstream 40) and TOLERATION_SECONDS the real-kubelet pods' unreachable
# toleration (0; "upstream" leaves admission's 300 s); E2E_TIMEOUT the go
# test timeout (30m; about 90m at upstream's timings). E2E_PACKAGES limits
# the run to some suites (say ./test/e2e/kubelet; the stock-plugin run of
# TestFrozenHolder comes only with ./test/e2e/node), E2E_RUN to some tests
# (go test -run). One run at a time on the machine: a run holds
# /run/lock/kube-rbd-failover-e2e.lock (RBDF_E2E_LOCK). Logs go
# to _output/e2e/<run>/ and are kept when a suite fails; the report is
# _output/e2e/report.md, with the real-kubelet suite's timeline pictures
# (timeline-*.svg) beside it.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"
# shellcheck source=hack/lib/test.sh
source "${RBDF_ROOT}/hack/lib/test.sh"
# shellcheck source=hack/lib/build.sh
source "${RBDF_ROOT}/hack/lib/build.sh"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::ensure
mkdir -p "${RBDF_OUTPUT}/e2e"
# The suites remove what earlier runs left on the machine (namespaces,
# cgroups, devices), whichever checkout they came from: a second run at the
# same time would tear down the first. flock -o keeps the lock in flock
# itself, not in the daemons the run starts (one left behind would lock
# out the run that cleans it up).
lock="${RBDF_E2E_LOCK:-/run/lock/kube-rbd-failover-e2e.lock}"
if [[ -z "${RBDF_E2E_LOCKED:-}" ]]; then
  rc=0
  RBDF_E2E_LOCKED=1 flock -n -o -E 75 "${lock}" "${BASH_SOURCE[0]}" "$@" || rc=$?
  ((rc != 75)) || rbdf::log::fatal "another e2e run on this machine holds ${lock}"
  exit "${rc}"
fi
run="$(date -u +%Y%m%dT%H%M%SZ)"
export E2E_DIR="${RBDF_OUTPUT}/e2e/${run}"
export WATCH_TIMEOUT="${WATCH_TIMEOUT:-10}"
mkdir -p "${E2E_DIR}"

rbdf::log::info "building the control plane for the e2e"
rbdf::build::binaries "${RBDF_TREE}" "${RBDF_VERSION}" "${RBDF_LINE_OUTPUT}/bin" kube-apiserver kube-controller-manager kubelet
rbdf::tree::stock
rbdf::build::binaries "${RBDF_STOCK_TREE}" "${RBDF_KUBE_VERSION}" "${RBDF_LINE_OUTPUT}/stock/bin" kube-controller-manager kubelet
e2e_bin="${RBDF_OUTPUT}/e2e/bin"
rbdf::golang::go "${RBDF_TREE}" "patched-${RBDF_LINE}" build -o "${e2e_bin}/etcd" ./test/e2e/cmd/etcd
# The real kubelet's nodes: upstream's fake container runtime, and an "rbd"
# that gives "rbd map" a real block device (a krbd client of the node and a loop device).
rbdf::golang::go "${RBDF_TREE}" "patched-${RBDF_LINE}" build -o "${e2e_bin}/fake-cri" ./test/e2e/cmd/fake-cri
rbdf::golang::go "${RBDF_TREE}" "patched-${RBDF_LINE}" build -o "${e2e_bin}/rbd-shim" ./test/e2e/cmd/rbd-shim
export E2E_ETCD="${e2e_bin}/etcd"
export E2E_KUBELET_PATCHED="${RBDF_LINE_OUTPUT}/bin/kubelet"
# The revision the patched builds must report (checkKubeletVersion).
export E2E_RBDF_REVISION="${RBDF_REVISION}"
export E2E_KUBELET_STOCK="${RBDF_LINE_OUTPUT}/stock/bin/kubelet"
export E2E_FAKE_CRI="${e2e_bin}/fake-cri"
export E2E_RBD_SHIM="${e2e_bin}/rbd-shim"
export E2E_KUBE_APISERVER="${RBDF_LINE_OUTPUT}/bin/kube-apiserver"
export E2E_KCM_PATCHED="${RBDF_LINE_OUTPUT}/bin/kube-controller-manager"
export E2E_KCM_STOCK="${RBDF_LINE_OUTPUT}/stock/bin/kube-controller-manager"

# shellcheck disable=SC2317 # invoked through rbdf::test::gojson
read -ra packages <<< "${E2E_PACKAGES:-./test/e2e/...}"
run_args=()
[[ -z "${E2E_RUN:-}" ]] || run_args=(-run "${E2E_RUN}")
e2e() {
  rbdf::golang::go "${RBDF_TREE}" "patched-${RBDF_LINE}" test -json -count=1 -timeout "${E2E_TIMEOUT:-30m}" \
    -tags "${RBDF_GOTAGS}" "${run_args[@]}" "${packages[@]}" 2>&1
}

# The frozen-holder test once more with the plugin of the stock tree: the
# hazard the fence removes (a stale write that lands) must show there.
# shellcheck disable=SC2317 # invoked through rbdf::test::gojson
e2e_stock_plugin() {
  E2E_PLUGIN=stock rbdf::golang::go "${RBDF_STOCK_TREE}" "stock-${RBDF_LINE}" test -json -count=1 -timeout 10m \
    -tags "${RBDF_GOTAGS}" -run '^TestFrozenHolder$' ./test/e2e/node 2>&1
}

start="$(date +%s)"
rbdf::test::gojson "e2e (${RBDF_LINE}, Ceph + control plane)" "${E2E_DIR}/failed" e2e
if [[ " ${packages[*]} " == *" ./test/e2e/... "* || " ${packages[*]} " == *" ./test/e2e/node "* ]]; then
  rbdf::test::gojson "e2e (${RBDF_LINE}, node side, stock plugin)" "${E2E_DIR}/failed-stock" e2e_stock_plugin
  cat "${E2E_DIR}/failed-stock" >> "${E2E_DIR}/failed"
fi
for report in "${E2E_DIR}"/*-report.md; do
  if [[ -f "${report}" ]]; then
    cat "${report}"
    echo
  fi
done > "${RBDF_OUTPUT}/e2e/report.md"
# The real-kubelet suite's timeline pictures go beside the report.
rm -f "${RBDF_OUTPUT}"/e2e/timeline-*.svg
for svg in "${E2E_DIR}"/timeline-*.svg; do
  if [[ -f "${svg}" ]]; then
    cp "${svg}" "${RBDF_OUTPUT}/e2e/"
  fi
done
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
