#!/usr/bin/env bash
# Benchmarks reconcile passes of the attach/detach controller on stock and
# patched trees (BenchmarkReconcilePass: 1,000 nodes, 10,000 attached RBD RWO
# volumes, 10 % wanted elsewhere, half of those holders NotReady) and compares
# them with benchstat. The two test binaries run alternately, so drift of the
# machine hits both alike. Output in _output/bench/.
# COUNT (default 10) and BENCHTIME (default 200x) tune the runs.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/golang.sh
source "${RBDF_ROOT}/hack/lib/golang.sh"

readonly BENCHSTAT="golang.org/x/perf/cmd/benchstat@v0.0.0-20250813145418-2f7363a06fe1"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::ensure
rbdf::tree::stock
out="${RBDF_LINE_OUTPUT}/bench"
mkdir -p "${out}"
cd "${RBDF_ROOT}"
for flavor in stock patched; do
  tree="${RBDF_TREE}"
  [[ "${flavor}" == stock ]] && tree="${RBDF_STOCK_TREE}"
  rbdf::golang::go "${tree}" "${flavor}" test -c -o "${out}/${flavor}.test" ./pkg/controller/volume/attachdetach/
  : > "${out}/${flavor}.txt"
done
for ((i = 1; i <= ${COUNT:-10}; i++)); do
  for flavor in stock patched; do
    rbdf::log::info "run ${i}/${COUNT:-10}: ${flavor}"
    "${out}/${flavor}.test" -test.run '^$' -test.bench '^BenchmarkReconcilePass$' \
      -test.benchtime "${BENCHTIME:-200x}" >> "${out}/${flavor}.txt"
  done
done
go run "${BENCHSTAT}" "${out}/stock.txt" "${out}/patched.txt" | tee "${out}/benchstat.txt"
