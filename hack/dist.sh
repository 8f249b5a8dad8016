#!/usr/bin/env bash
# Packs what distro packagers take: every line's series, PATCHES.md and
# SHA256SUMS in _output/dist/kube-rbd-failover-<revision>-patches.tar.gz, and
# per line a quilt-ready folder _output/dist/<line>/patches/ (the patches and
# their series file) for `quilt push -a` in an unpacked upstream source.
# The tarball holds the format-patch files as committed (for git am); the
# quilt folders hold them with DEP-3 fields in place of the mail headers
# (rbdf::tree::dep3_patch), the diff unchanged.
set -euo pipefail

# shellcheck source=hack/lib/init.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/init.sh"

dist="${RBDF_OUTPUT}/dist"
name="kube-rbd-failover-${RBDF_REVISION}-patches"
rm -rf "${dist}"
mkdir -p "${dist}/${name}"
cp "${RBDF_ROOT}/PATCHES.md" "${dist}/${name}/"
for line in $(rbdf::lines::list); do
  rbdf::lines::setup "${line}"
  [[ -s "${RBDF_PATCHES}/series" ]] || continue
  for dir in "${dist}/${name}/${line}/patches" "${dist}/${line}/patches"; do
    mkdir -p "${dir}"
    # quilt reads the series from patches/series.
    cp "${RBDF_PATCHES}/series" "${dir}/series"
  done
  while read -r patch; do
    cp "${patch}" "${dist}/${name}/${line}/patches/"
    rbdf::tree::dep3_patch "${patch}" > "${dist}/${line}/patches/$(basename "${patch}")"
  done < <(rbdf::tree::series_files)
  echo "${RBDF_KUBE_VERSION}" > "${dist}/${name}/${line}/UPSTREAM_VERSION"
done
sums="$(cd "${dist}/${name}" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs sha256sum)"
echo "${sums}" > "${dist}/${name}/SHA256SUMS"
# Reproducible: fixed order, owner and time, no gzip timestamp.
tar -C "${dist}" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "${name}" |
  gzip -n > "${dist}/${name}.tar.gz"
rm -rf "${dist:?}/${name}"
(cd "${dist}" && sha256sum "${name}.tar.gz" > "${name}.tar.gz.sha256")
rbdf::log::info "${dist}/${name}.tar.gz ($(tar -tzf "${dist}/${name}.tar.gz" | grep -c '\.patch$') patches)"
