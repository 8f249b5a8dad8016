#!/usr/bin/env bash
# Building the binaries with upstream's own build scripts.

readonly RBDF_BINARIES=(kubelet kube-controller-manager)

# rbdf::build::upstream_env prints the environment upstream's scripts need to
# run in a tree assembled from module zips:
# the module zip leaves vendor/modules.txt without vendored code, and the
# host's Go is new enough, so no .go-version toolchain download.
rbdf::build::upstream_env() {
  echo "FORCE_HOST_GO=1"
  echo "GOFLAGS=-mod=readonly"
  echo "GOTOOLCHAIN=local"
  # Set, it keeps v1.28/v1.29's test.sh from building hack/tools/ncpu, a
  # nested module the module zip does not carry.
  echo "GOMAXPROCS=$(nproc)"
}

# rbdf::build::binaries TREE VERSION BINDIR [BINARY...] builds the binaries
# (default RBDF_BINARIES) in TREE with "make WHAT=…", stamps VERSION into them
# and copies them to BINDIR.
rbdf::build::binaries() {
  local tree="$1" version="$2" bindir="$3" tmp version_file commit epoch what=() bin
  shift 3
  local -a binaries=("${RBDF_BINARIES[@]}")
  if (($# > 0)); then binaries=("$@"); fi
  local -a env
  mapfile -t env < <(rbdf::build::upstream_env)
  local state=clean
  # A build of local work that is not in the series says so in its version.
  if [[ -n "$(rbdf::tree::git "${tree}" status --porcelain)" ]]; then
    state=dirty
    version="${version}.dirty"
  fi
  commit="$(rbdf::tree::git "${tree}" rev-parse HEAD)"
  epoch="$(rbdf::tree::git "${tree}" log -1 --format=%ct HEAD)"
  rbdf::util::tmpdir tmp
  version_file="${tmp}/version"
  {
    echo "KUBE_GIT_COMMIT='${commit}'"
    echo "KUBE_GIT_TREE_STATE='${state}'"
    echo "KUBE_GIT_VERSION='${version}'"
    echo "KUBE_GIT_MAJOR='1'"
    echo "KUBE_GIT_MINOR='$(echo "${version}" | cut -d. -f2)'"
  } > "${version_file}"
  if [[ ! -f "${tree}/go.work" ]]; then
    # Before v1.30 upstream builds with GOPROXY=off from vendor/, which the
    # module zips leave empty: fetch the modules first (checked against the
    # tree's go.sum), then build from the module cache.
    (cd "${tree}" && env "${env[@]}" GO111MODULE=on go mod download)
  fi
  for bin in "${binaries[@]}"; do what+=("cmd/${bin}"); done
  rbdf::log::info "building ${binaries[*]} ${version} in ${tree}"
  # kubelet is dynamic upstream and kube-controller-manager static: build both
  # static so they share compiled packages (half the cold build time).
  env "${env[@]}" KUBE_STATIC_OVERRIDES="kubelet" KUBE_GIT_VERSION_FILE="${version_file}" \
    SOURCE_DATE_EPOCH="${epoch}" KUBE_VERBOSE="${KUBE_VERBOSE:-1}" \
    make -C "${tree}" WHAT="${what[*]}"
  rbdf::util::tmpdir_rm "${tmp}"
  mkdir -p "${bindir}"
  for bin in "${binaries[@]}"; do
    install -m 0755 "${tree}/_output/local/go/bin/${bin}" "${bindir}/${bin}"
  done
  rbdf::log::info "$("${bindir}/${binaries[0]}" --version) -> ${bindir}"
}
