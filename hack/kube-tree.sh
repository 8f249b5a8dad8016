#!/usr/bin/env bash
# Materialises _output/kubernetes: upstream at the line's release, the series
# applied as one commit per patch. Usage: hack/kube-tree.sh [LINE]
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

rbdf::lines::setup "${1:-${LINE:-}}"
rbdf::tree::materialise
