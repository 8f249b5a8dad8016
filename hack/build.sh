#!/usr/bin/env bash
# Builds kubelet and kube-controller-manager for a release line.
# Usage: hack/build.sh [patched|stock] [BINARY...]   (LINE selects the release line)
#   patched: the series applied, into _output/bin, version vX.Y.Z+rbdfailover.N
#   stock:   the pristine upstream tag, into _output/stock/bin, version vX.Y.Z
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"
# shellcheck source=hack/lib/build.sh
source "${RBDF_ROOT}/hack/lib/build.sh"

rbdf::lines::setup "${LINE:-}"
rbdf::tree::ensure

flavour="${1:-patched}"
shift || true
case "${flavour}" in
  patched)
    rbdf::build::binaries "${RBDF_TREE}" "${RBDF_VERSION}" "${RBDF_LINE_OUTPUT}/bin" "$@"
    ;;
  stock)
    rbdf::tree::stock
    rbdf::build::binaries "${RBDF_STOCK_TREE}" "${RBDF_KUBE_VERSION}" "${RBDF_LINE_OUTPUT}/stock/bin" "$@"
    ;;
  *)
    rbdf::log::fatal "usage: $0 [patched|stock]"
    ;;
esac
