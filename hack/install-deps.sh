#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need (run as root, or
# with sudo available). Go comes from the machine; Go modules come from the
# module proxy through the go command.
set -euo pipefail

readonly PACKAGES=(
  git make rsync       # upstream's build scripts
  shellcheck           # hack/verify-shellcheck.sh
  quilt                # patch-series checks for packagers
  # test/e2e: a throwaway Ceph cluster and a librbd client standing in for a
  # node's mapping (python3-rbd comes with ceph-common)
  ceph-mon ceph-osd ceph-common python3-rbd
  # test/e2e/node: the plugin's rbd-nbd fallback runs the real rbd-nbd
  rbd-nbd
  # test/e2e/kubelet: a node's mapping is a loop device over a file that
  # the node's krbd client serves (python3-rbd behind python3-llfuse; the
  # harness reads images back with rbd-fuse); losetup is in Debian's mount
  # package; the harness asks the kubelet's health endpoint with curl
  python3-llfuse rbd-fuse curl mount
  # test/e2e/kubelet: a network namespace per node (ip netns, veth, rules)
  iproute2
  # test/e2e/node: a dirty ext4 on a read-only loop device
  e2fsprogs util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q "install ok installed" || missing+=("${p}")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
sudo=()
((EUID == 0)) || sudo=(sudo)
echo "+++ installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
