#!/usr/bin/env bash
# Our Go module compiled against a materialised tree instead of the module
# cache: a generated modfile that replaces k8s.io/kubernetes and its staging
# modules with the tree's directories.

# rbdf::golang::modfile TREE NAME writes _output/go/NAME.mod (and .sum) and
# prints the path of the .mod, for go -modfile.
rbdf::golang::modfile() {
  local tree="$1" name="$2" dir="${RBDF_OUTPUT}/go" mod
  mkdir -p "${dir}"
  {
    sed '/^replace (/,/^)/d' "${RBDF_ROOT}/go.mod"
    echo
    echo "replace ("
    printf '\tk8s.io/kubernetes => %s\n' "${tree}"
    for mod in "${tree}"/staging/src/k8s.io/*/; do
      mod="$(basename "${mod}")"
      [[ -f "${tree}/staging/src/k8s.io/${mod}/go.mod" ]] || continue
      printf '\tk8s.io/%s => %s\n' "${mod}" "${tree}/staging/src/k8s.io/${mod}"
    done
    echo ")"
  } > "${dir}/${name}.mod"
  cp "${RBDF_ROOT}/go.sum" "${dir}/${name}.sum"
  echo "${dir}/${name}.mod"
}

# rbdf::golang::our_packages prints our module's package patterns that hold
# Go files (specs, e2e, tools), for go test and go vet.
rbdf::golang::our_packages() {
  (cd "${RBDF_ROOT}" && find . -path ./_output -prune -o -name '*.go' -printf '%h\n' | sort -u)
}
