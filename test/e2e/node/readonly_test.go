/*
Copyright 2026 The kube-rbd-failover Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package node

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdplugin"
)

// sh runs a command for the test and returns its trimmed output.
func sh(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// dirtyExt4 makes an ext4 image whose journal needs recovery, as a snapshot
// of a mounted filesystem has: "before" is checkpointed into the
// filesystem, "after" may be in the journal only.
func dirtyExt4(t *testing.T, dir string) string {
	t.Helper()
	img := filepath.Join(dir, "fs.img")
	sh(t, "truncate", "-s", "64M", img)
	sh(t, "mkfs.ext4", "-q", img)
	loop := sh(t, "losetup", "-f", "--show", img)
	defer sh(t, "losetup", "-d", loop)
	mnt := filepath.Join(dir, "writer")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, "mount", loop, mnt)
	mounted := true
	defer func() {
		if mounted {
			sh(t, "umount", mnt)
		}
	}()
	if err := os.WriteFile(filepath.Join(mnt, "before"), []byte("written before the snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A freeze writes the journal back into the filesystem. Every sync here
	// is of this filesystem alone (syncfs): a global sync would wait for any
	// other filesystem on the machine, a fenced one of another suite too.
	sh(t, "sync", "-f", mnt)
	sh(t, "fsfreeze", "-f", mnt)
	sh(t, "fsfreeze", "-u", mnt)
	if err := os.WriteFile(filepath.Join(mnt, "after"), []byte("written in the last transaction"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "sync", "-f", mnt)
	snapshot := filepath.Join(dir, "snapshot.img")
	sh(t, "cp", "--sparse=always", img, snapshot)
	sh(t, "umount", mnt)
	mounted = false
	if features := sh(t, "dumpe2fs", "-h", snapshot); !strings.Contains(features, "needs_recovery") {
		t.Fatalf("the snapshot's journal is clean; the test proves nothing:\n%s", features)
	}
	return snapshot
}

// TestReadOnlyMapOfDirtyFilesystem: a ReadOnlyMany volume used read-only is
// mapped --read-only (patch 0002), where a filesystem with a dirty journal
// (a PV made from a snapshot of a mounted filesystem) cannot replay it. The
// plugin's MountDevice must still mount it, on the real mounter.
func TestReadOnlyMapOfDirtyFilesystem(t *testing.T) {
	if pluginBuild() != "patched" {
		t.Skip("the stock plugin maps such volumes read-write")
	}
	dir := t.TempDir()
	snapshot := dirtyExt4(t, dir)
	// A read-only loop device stands in for "rbd map --read-only".
	dev := sh(t, "losetup", "-r", "-f", "--show", snapshot)
	defer sh(t, "losetup", "-d", dev)

	// What happened before the fix: a plain read-only mount fails.
	plain := filepath.Join(dir, "plain")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "ro", dev, plain).CombinedOutput(); err == nil {
		sh(t, "umount", plain)
		t.Fatalf("a plain read-only mount of the dirty filesystem worked; the test proves nothing")
	} else {
		report("- dirty ext4 on a read-only device, plain `mount -o ro`: %s\n", strings.TrimSpace(string(out)))
	}

	vol := rbdplugin.Volume{Monitor: cluster.Monitor, Pool: "rbd", Image: "dirty", User: "kube",
		AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, ReadOnly: true}
	a := rbdplugin.NewAttacherWithMounter(t, utilexec.New(), cluster.UserKey, mount.New(""))
	target := filepath.Join(dir, "globalmount")
	if err := a.(volume.DeviceMounter).MountDevice(vol.Spec(), dev, target, volume.DeviceMounterArgs{}); err != nil {
		t.Fatalf("MountDevice of the read-only mapping: %v", err)
	}
	defer sh(t, "umount", target)
	data, err := os.ReadFile(filepath.Join(target, "before"))
	if err != nil || string(data) != "written before the snapshot" {
		t.Errorf("read %q (%v) through the mount, want the data written before the snapshot", data, err)
	}
	opts := ""
	for _, line := range strings.Split(sh(t, "cat", "/proc/self/mounts"), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == target {
			opts = f[3]
		}
	}
	report("- dirty ext4 on a read-only device, the plugin's MountDevice: mounted (%s); data checkpointed before the snapshot readable\n", opts)
}
