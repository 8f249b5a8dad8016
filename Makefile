# kube-rbd-failover: patched kubelet and kube-controller-manager for Ceph RBD
# failover. Every target is a thin wrapper around a script in hack/.
#
#   make                  build _output/bin/{kubelet,kube-controller-manager}
#   make test             every test of every line (LINE=v1.29: that line's
#                         upstream tests and specs, plus verify and tooling)
#   make test-all-lines   every line, whatever LINE says
#   make dist             patches tarball + quilt folders (DEP-3 headers) in
#                         _output/dist
#   make test-stock       the A/B record: specs against stock Kubernetes
#   make bench            reconcile-pass benchmark, stock vs patched (benchstat)
#   make e2e              end-to-end suites against a real Ceph cluster
#                         (WATCH_TIMEOUT=30 for Ceph's default watch timeout;
#                         NODE_MONITOR_GRACE_PERIOD=40 TOLERATION_SECONDS=upstream
#                         for upstream's timings; E2E_PACKAGES=./test/e2e/kubelet
#                         for one suite, E2E_RUN=TestPowerOff for some tests)
#   make stock            stock binaries into _output/stock/bin
#   make kube-tree        materialise _output/kubernetes (upstream + series)
#   make update-patches   export the tree's commits to patches/$(LINE)
#   make verify           series applies, exports identically, ledger, lint
#
# LINE selects the release line (v1.30, v1.29, v1.28; default v1.30).
# RACE=1 runs the Go tests with the race detector.

SHELL := /usr/bin/env bash
LINE ?=
RACE ?=
WATCH_TIMEOUT ?=
NODE_MONITOR_GRACE_PERIOD ?=
TOLERATION_SECONDS ?=
E2E_PACKAGES ?=
E2E_RUN ?=
E2E_TIMEOUT ?=
export LINE RACE WATCH_TIMEOUT NODE_MONITOR_GRACE_PERIOD TOLERATION_SECONDS E2E_PACKAGES E2E_RUN E2E_TIMEOUT

.PHONY: all build stock kube-tree update-patches verify test test-all-lines test-stock e2e dist deps clean bench

all: build

deps:
	hack/install-deps.sh

build: deps
	hack/build.sh patched

stock: deps
	hack/build.sh stock

kube-tree:
	hack/kube-tree.sh

update-patches:
	hack/update-patches.sh

verify: deps
	hack/verify.sh

test: deps
	hack/test.sh

test-all-lines: deps
	LINE= hack/test.sh

dist:
	hack/dist.sh

test-stock: deps
	hack/test-stock.sh

e2e: deps
	hack/test-e2e.sh

clean:
	rm -rf _output

bench:
	hack/bench.sh
