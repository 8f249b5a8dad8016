#!/usr/bin/env bash
# Our Go module compiled against a materialised tree instead of the module
# cache: a generated modfile that replaces k8s.io/kubernetes and its staging
# modules with the tree's directories.

# rbdf::golang::modfile TREE NAME writes _output/go/NAME.mod (and .sum) and
# prints the path of the .mod, for go -modfile. It requires what TREE's own
# go.mod requires, at TREE's versions (so each line builds with its own
# dependencies), and replaces k8s.io/kubernetes and its staging modules with
# TREE's directories.
rbdf::golang::modfile() {
  local tree="$1" name="$2" dir="${RBDF_OUTPUT}/go" mod staging_version
  local -a staging=()
  mkdir -p "${dir}"
  for mod in "${tree}"/staging/src/k8s.io/*/; do
    mod="$(basename "${mod}")"
    [[ -f "${tree}/staging/src/k8s.io/${mod}/go.mod" ]] && staging+=("${mod}")
  done
  # From v1.30 the staging modules require each other at the release's
  # version while the tree's go.mod says v0.0.0; require that version so the
  # file is complete and builds run with -mod=readonly.
  staging_version="$(sed -n 's|^[[:space:]]*k8s.io/apimachinery \(v[0-9][^ ]*\)$|\1|p' \
    "${tree}/staging/src/k8s.io/api/go.mod" | head -n1)"
  {
    sed -n '1,/^go /p' "${RBDF_ROOT}/go.mod" | grep -v '^//'
    echo
    echo "require k8s.io/kubernetes v0.0.0"
    echo
    awk -v staging="${staging[*]}" -v version="${staging_version:-v0.0.0}" '
      BEGIN { n = split(staging, s, " "); for (i = 1; i <= n; i++) is_staging["k8s.io/" s[i]] = 1 }
      /^require \($/ { inblock = 1; print; next }
      inblock {
        if ($2 == "v0.0.0" && ($1 in is_staging)) sub(/v0\.0\.0/, version)
        print; if ($0 == ")") inblock = 0; next
      }
      /^require / { print }' "${tree}/go.mod"
    echo
    echo "replace ("
    printf '\tk8s.io/kubernetes => %s\n' "${tree}"
    for mod in "${staging[@]}"; do
      printf '\tk8s.io/%s => %s\n' "${mod}" "${tree}/staging/src/k8s.io/${mod}"
    done
    echo ")"
  } > "${dir}/${name}.mod"
  cat "${RBDF_ROOT}/go.sum" "${tree}/go.sum" | sort -u > "${dir}/${name}.sum"
  echo "${dir}/${name}.mod"
}

# rbdf::golang::go TREE NAME VERB [ARG...] runs "go VERB" on our module
# compiled against TREE: from RBDF_ROOT (in a subshell, so the caller's
# directory is kept), with GOFLAGS=-mod=readonly and the modfile
# rbdf::golang::modfile TREE NAME writes (NAME: e.g. patched-${RBDF_LINE} or
# stock-${RBDF_LINE}). Environment for the go command goes before the call:
#   E2E_PLUGIN=stock rbdf::golang::go "${RBDF_STOCK_TREE}" "stock-${RBDF_LINE}" test ...
rbdf::golang::go() {
  local tree="$1" name="$2" verb="$3" modfile
  shift 3
  modfile="$(rbdf::golang::modfile "${tree}" "${name}")" || return
  (cd "${RBDF_ROOT}" && GOFLAGS=-mod=readonly go "${verb}" -modfile="${modfile}" "$@")
}

# rbdf::golang::our_packages prints our module's package patterns that hold
# Go files (specs, e2e, tools), for go test and go vet.
rbdf::golang::our_packages() {
  (cd "${RBDF_ROOT}" && find . -path ./_output -prune -o -name '*.go' -printf '%h\n' | sort -u)
}
