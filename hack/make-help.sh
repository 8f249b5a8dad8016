#!/usr/bin/env bash
# Prints the Makefile's targets and variables with one line each: the first
# line of the comment right above each target's rule and each "VAR ?="
# (like upstream's make help, which prints the help text kept next to each
# target). A target without such a comment is left out, and
# hack/test-tooling.sh fails on it. Usage: hack/make-help.sh [MAKEFILE]
# (make help).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
# Not lib/init.sh: it needs the go command, and make help should not.
# shellcheck source=hack/lib/logging.sh
source "${root}/hack/lib/logging.sh"

makefile="${1:-${root}/Makefile}"
[[ -f "${makefile}" ]] || rbdf::log::fatal "no Makefile at ${makefile}"

# entries KIND prints "NAME<tab>DESCRIPTION" for each documented target
# (KIND rule) or variable (KIND var), in the Makefile's order.
entries() {
  awk -v kind="$1" '
    /^#/ { if (!n++) { doc = $0; sub(/^# ?/, "", doc) } next }
    kind == "rule" && n && /^[A-Za-z][A-Za-z0-9_.-]*:([^=]|$)/ { print substr($0, 1, index($0, ":") - 1) "\t" doc }
    kind == "var" && n && /^[A-Za-z_][A-Za-z0-9_]* *\?=/ { name = $0; sub(/ *\?=.*/, "", name); print name "\t" doc }
    { n = 0 }
  ' "${makefile}"
}

# table prints NAME<tab>DESCRIPTION rows as aligned columns.
table() {
  awk -F'\t' '{ name[NR] = $1; doc[NR] = $2; if (length($1) > w) w = length($1) }
    END { for (i = 1; i <= NR; i++) printf "  %-" w "s  %s\n", name[i], doc[i] }'
}

echo "Usage: make [TARGET...] [VARIABLE=VALUE...]"
echo
echo "Targets:"
entries rule | table
echo
echo "Variables:"
entries var | table
echo
echo "Each description is the comment above the target or the variable in the Makefile; the lines after its first say more."
