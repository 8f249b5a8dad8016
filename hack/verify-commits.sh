#!/usr/bin/env bash
# Verifies that each patch of every line is an upstream-shaped commit:
# "UPSTREAM: <carry|drop|PR number>: <area>: <summary>" (OpenShift's carry
# vocabulary), a Signed-off-by and a release-note.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

failed=0
for line in ${LINES:-$(rbdf::lines::list)}; do
  rbdf::lines::setup "${line}"
  while read -r patch; do
    name="${line}/$(basename "${patch}")"
    if [[ ! -f "${patch}" ]]; then
      rbdf::log::error "${name}: listed in the series but missing"
      failed=1
      continue
    fi
    subject="$(rbdf::tree::patch_subject "${patch}")"
    message="$(rbdf::tree::patch_message "${patch}")"
    if ! [[ "${subject}" =~ ^UPSTREAM:\ \<(carry|drop|[0-9]+)\>:\ [a-z0-9./-]+:\ [^\ ].+$ ]]; then
      rbdf::log::error "${name}: subject '${subject}' is not one of: 'UPSTREAM: <carry>: <area>: <summary>'" \
        "(a patch we keep), 'UPSTREAM: <drop>: <area>: <summary>' (dropped at the next rebase)," \
        "'UPSTREAM: <12345>: <area>: <summary>' (a backport of upstream pull request 12345)"
      failed=1
    fi
    if ! grep -q '^Signed-off-by: .\+ <.\+@.\+>$' <<<"${message}"; then
      rbdf::log::error "${name}: no Signed-off-by: Name <email>"
      failed=1
    fi
    if ! awk '/^```release-note$/ { open = 1; next } open && /^```$/ { found = 1 } END { exit !found }' <<<"${message}"; then
      rbdf::log::error "${name}: no \`\`\`release-note block"
      failed=1
    fi
  done < <(rbdf::tree::series_files)
done
exit "${failed}"
