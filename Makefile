# kube-rbd-failover: patched kubelet and kube-controller-manager for Ceph RBD
# failover. Every target is a thin wrapper around a script in hack/.
#
# `make help` lists the targets and the variables, one line each: the first
# line of the comment right above each target or variable is its
# description (hack/make-help.sh); further comment lines say more.

SHELL := /usr/bin/env bash

# The release line: v1.30, v1.29 or v1.28 (default v1.30; make test: every line).
LINE ?=
# RACE=1 runs the Go tests with the race detector.
RACE ?=
# e2e: the OSDs' osd_client_watch_timeout in seconds (default 10; Ceph's is 30).
WATCH_TIMEOUT ?=
# e2e: the controller's node monitor grace period in seconds (default 10; upstream's is 40).
NODE_MONITOR_GRACE_PERIOD ?=
# e2e: the real-kubelet pods' unreachable toleration in seconds (default 0; "upstream": 300).
TOLERATION_SECONDS ?=
# e2e: the suites to run (say ./test/e2e/kubelet; default all).
E2E_PACKAGES ?=
# e2e: the tests to run (go test -run, say TestPowerOff).
E2E_RUN ?=
# e2e: the go test timeout (default 30m; about 90m at upstream's timings).
E2E_TIMEOUT ?=
export LINE RACE WATCH_TIMEOUT NODE_MONITOR_GRACE_PERIOD TOLERATION_SECONDS E2E_PACKAGES E2E_RUN E2E_TIMEOUT

.PHONY: all build stock kube-tree update-patches update-revision verify test test-all-lines test-stock e2e dist deps clean bench help

# Build the patched binaries (the default target; see build).
all: build

# Install the Debian packages the build and the tests need.
deps:
	hack/install-deps.sh

# Build _output/bin/{kubelet,kube-controller-manager} (LINE=v1.29: _output/v1.29/bin).
build: deps
	hack/build.sh patched

# Build the stock binaries into _output/stock/bin.
stock: deps
	hack/build.sh stock

# Materialise _output/kubernetes: upstream with the line's series as commits.
kube-tree:
	hack/kube-tree.sh

# Export the tree's commits to patches/<line> and rewrite its series.
update-patches:
	hack/update-patches.sh

# Record RBDF_REVISION with the series (refused if they changed without a bump).
update-revision:
	hack/update-revision.sh

# Series apply and export identically, lines agree, revision recorded, ledger, lint.
# Runs every hack/verify-*.sh; hack/verify.sh NAME... runs some.
verify: deps
	hack/verify.sh

# Every test of every line (LINE=v1.29: that line's upstream tests and specs, plus verify and tooling).
test: deps
	hack/test.sh

# Every test of every line, whatever LINE says.
test-all-lines: deps
	LINE= hack/test.sh

# Patches tarball and quilt folders (DEP-3 headers) in _output/dist.
dist:
	hack/dist.sh

# The A/B record: our specs against stock Kubernetes.
test-stock: deps
	hack/test-stock.sh

# End-to-end suites against a real Ceph cluster and control plane.
#   make e2e WATCH_TIMEOUT=30                 at Ceph's default watch timeout
#   make e2e NODE_MONITOR_GRACE_PERIOD=40 TOLERATION_SECONDS=upstream
#                                             at upstream's timings
#   make e2e E2E_PACKAGES=./test/e2e/kubelet E2E_RUN=TestPowerOff
#                                             one suite, some tests
e2e: deps
	hack/test-e2e.sh

# Remove _output.
clean:
	rm -rf _output

# Reconcile-pass benchmark, stock vs patched (benchstat); COUNT and BENCHTIME tune it.
bench:
	hack/bench.sh

# List the targets and variables with one line each.
help:
	@hack/make-help.sh
