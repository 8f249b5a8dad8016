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

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

func TestClientKey(t *testing.T) {
	base := mapArgs{id: "kube", mon: "10.0.0.1:6789"}
	with := func(f func(*mapArgs)) mapArgs { m := base; f(&m); return m }
	key := []byte("AQD...==")
	shared := clientKey(base, key)
	for _, tc := range []struct {
		name string
		m    mapArgs
		sec  []byte
		same bool
	}{
		{"the same map again", base, key, true},
		{"a device option apart", with(func(m *mapArgs) { m.options = "queue_depth=128,lock_on_read" }), key, true},
		{"a trailing newline in the key file", base, append(key, '\n'), true},
		{"another user", with(func(m *mapArgs) { m.id = "admin" }), key, false},
		{"other monitors", with(func(m *mapArgs) { m.mon = "10.0.0.2:6789" }), key, false},
		{"another secret", base, []byte("AQE...=="), false},
		{"a libceph option apart", with(func(m *mapArgs) { m.options = "ms_mode=secure" }), key, false},
	} {
		if got := clientKey(tc.m, tc.sec); (got == shared) != tc.same {
			t.Errorf("%s: key %q, shared %q: want the same client %v", tc.name, got, shared, tc.same)
		}
	}
	if got := clientKey(with(func(m *mapArgs) { m.options = "queue_depth=128,noshare" }), key); got != "" {
		t.Errorf("noshare: key %q, want none (a client of its own)", got)
	}
}

func TestLegacyAddress(t *testing.T) {
	for in, want := range map[string]string{
		"[v2:10.0.0.5:0/3348451542,v1:10.0.0.5:0/3348451542]": "10.0.0.5:0/3348451542",
		"10.0.0.5:0/77": "10.0.0.5:0/77",
	} {
		if got, err := legacyAddress(in); err != nil || got != want {
			t.Errorf("legacyAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := legacyAddress("-"); err == nil {
		t.Errorf("legacyAddress(\"-\") = %q, want an error", got)
	}
}

// TestKrbdClientSharing runs krbd_client.py against a real cluster and
// shows it models krbd's clients: images mapped without noshare share one
// Ceph client (one id, one address, one watch per image), a noshare map
// has its own, an unmap drops the image's watch and nothing else, and a
// blocklist of the shared client fails the I/O of every image mapped
// through it while the noshare client's write lands.
func TestKrbdClientSharing(t *testing.T) {
	dir := os.Getenv("E2E_DIR")
	if dir == "" || os.Geteuid() != 0 {
		t.Skip("part of make e2e: needs root, Ceph and FUSE")
	}
	if _, err := exec.Command(python, "-c", "import llfuse, rbd").CombinedOutput(); err != nil {
		t.Fatalf("%s has no llfuse or rbd (hack/install-deps.sh installs python3-llfuse and python3-rbd): %v", python, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cluster, err := ceph.Start(ctx, ceph.Options{Dir: filepath.Join(dir, "rbd-shim-ceph"), WatchTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	for _, image := range []string{"a", "b", "c", "d", "e"} {
		if err := cluster.CreateImage(ctx, image, 16); err != nil {
			t.Fatal(err)
		}
	}
	keyFile, err := cluster.HolderKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	m := mapArgs{pool: "rbd", id: "kube", mon: cluster.Monitor, keyfile: keyFile}
	secret, _ := os.ReadFile(keyFile)
	key := clientKey(m, secret)
	shared, err := startClient(state, filepath.Join(state, "clients", key), m, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	own, err := startClient(state, filepath.Join(state, "clients", "noshare-1"), m, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// A hung request of a fenced client holds the mount: abort first.
		for _, c := range []*krbdClient{shared, own} {
			kubelet.AbortFuse(c.FuseConn)
			if err := c.stop(state); err != nil {
				t.Error(err)
			}
		}
	}()
	serial := 0
	mapThrough := func(c *krbdClient, image, mode string) string {
		t.Helper()
		serial++
		answer, err := c.request(fmt.Sprintf("map rbd %s %s rbd.%s.%d", image, mode, image, serial), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		file, _, _ := strings.Cut(answer, " ")
		return filepath.Join(c.mount(), file)
	}
	fileA, fileB, fileC := mapThrough(shared, "a", "rw"), mapThrough(shared, "b", "rw"), mapThrough(own, "c", "rw")
	fileD := mapThrough(shared, "d", "ro")
	_, addrShared, err := shared.clientID()
	if err != nil {
		t.Fatal(err)
	}
	_, addrOwn, err := own.clientID()
	if err != nil {
		t.Fatal(err)
	}
	if addrShared == addrOwn {
		t.Fatalf("the shared and the noshare client have one address %s", addrShared)
	}
	watchedOnlyBy := func(image, addr string) {
		t.Helper()
		w, err := cluster.Watchers(ctx, image)
		if err != nil {
			t.Fatal(err)
		}
		if (addr == "" && len(w) != 0) || (addr != "" && (len(w) != 1 || w[0].Address != addr)) {
			t.Errorf("watchers of %s: %v; want %q alone", image, w, addr)
		}
	}
	watchedOnlyBy("a", addrShared)
	watchedOnlyBy("b", addrShared)
	watchedOnlyBy("c", addrOwn)
	// A read-only map does not watch, as krbd's since Linux 5.3.
	watchedOnlyBy("d", "")
	if err := writeAt(fileD, "ro", 10*time.Second); err == nil {
		t.Errorf("write to the read-only mapping %s succeeded", fileD)
	}

	// An unmap closes its image alone: a, unwatched; b, still watched.
	if _, err := shared.request("unmap "+filepath.Base(fileA), fuseBound); err != nil {
		t.Fatal(err)
	}
	watchedOnlyBy("a", "")
	watchedOnlyBy("b", addrShared)
	if _, err := os.Stat(fileA); err == nil {
		t.Errorf("%s is still served after its unmap", fileA)
	}
	fileA = mapThrough(shared, "a", "rw")
	watchedOnlyBy("a", addrShared)

	for _, f := range []string{fileA, fileB, fileC} {
		if err := writeAt(f, "before", 10*time.Second); err != nil {
			t.Fatalf("write to %s: %v", f, err)
		}
	}
	for image, want := range map[string]string{"a": "before", "b": "before", "c": "before"} {
		if got := exportHead(ctx, t, cluster, image, len(want)); got != want {
			t.Errorf("image %s begins %q, want %q", image, got, want)
		}
	}

	// A map killed (the kubelet's deadline) after its client opened the
	// image and before it recorded its device: the next map's sweep closes
	// the image and stops the client no mapping goes through.
	killed, err := startClient(state, filepath.Join(state, "clients", "noshare-2"), m, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	fileK := mapThrough(killed, "e", "rw")
	watchedOnlyBy("e", killed.Address)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	pending := filepath.Join(state, "pending-noshare-2-"+filepath.Base(fileK)+".json")
	if err := saveJSON(pending, mapping{Pool: "rbd", Image: "e", Mount: killed.mount(), ClientDir: killed.Dir, File: filepath.Base(fileK),
		ShimPid: gone.Process.Pid}); err != nil {
		t.Fatal(err)
	}
	sweepKilledMaps(state)
	watchedOnlyBy("e", "")
	if _, err := os.Stat(pending); err == nil {
		t.Errorf("the killed map's record %s is still there after the sweep", pending)
	}
	if clientRuns(killed.Pid) || mounted(killed.mount()) {
		t.Errorf("the client of the killed map (pid %d) runs or is mounted after the sweep", killed.Pid)
	}

	// Through the shared client: a killed map is undone, a map that still
	// runs is left alone, and the client, which a published mapping (b's
	// record) goes through, keeps serving.
	fileE := mapThrough(shared, "e", "rw")
	if err := saveJSON(filepath.Join(state, "rbd90.json"), mapping{Pool: "rbd", Image: "b", Mount: shared.mount(),
		ClientDir: shared.Dir, File: filepath.Base(fileB)}); err != nil {
		t.Fatal(err)
	}
	self, err := process.StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for file, pid := range map[string]int{fileE: gone.Process.Pid, fileA: os.Getpid()} {
		if err := saveJSON(filepath.Join(state, "pending-"+key+"-"+filepath.Base(file)+".json"), mapping{Pool: "rbd",
			Mount: shared.mount(), ClientDir: shared.Dir, File: filepath.Base(file), ShimPid: pid, ShimStart: self}); err != nil {
			t.Fatal(err)
		}
	}
	sweepKilledMaps(state)
	watchedOnlyBy("e", "")
	watchedOnlyBy("a", addrShared)
	watchedOnlyBy("b", addrShared)
	if !clientRuns(shared.Pid) {
		t.Fatalf("the sweep of a killed map ended the shared client, which b's mapping goes through")
	}
	if _, err := os.Stat(filepath.Join(state, "pending-"+key+"-"+filepath.Base(fileA)+".json")); err != nil {
		t.Errorf("the sweep removed the pending record of a map that still runs: %v", err)
	}

	// A fence of the shared client takes every image mapped through it.
	if err := cluster.Blocklist(ctx, addrShared); err != nil {
		t.Fatal(err)
	}
	const ioBound = 30 * time.Second
	for _, f := range []string{fileA, fileB} {
		err := writeAt(f, "fenced", ioBound)
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("write to %s through the blocklisted shared client: %v; want an I/O error within %v", f, err, ioBound)
		}
	}
	if err := writeAt(fileC, "landed", ioBound); err != nil {
		t.Errorf("write to %s through the noshare client: %v", fileC, err)
	}
	for image, want := range map[string]string{"a": "before", "b": "before", "c": "landed"} {
		if got := exportHead(ctx, t, cluster, image, len(want)); got != want {
			t.Errorf("image %s begins %q after the fence, want %q", image, got, want)
		}
	}
}

// writeAt writes text at offset 0 of file and syncs it, within bound.
func writeAt(file, text string, bound time.Duration) error {
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte(text), 0); err != nil {
			done <- err
			return
		}
		done <- f.Sync()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		return fmt.Errorf("no answer within %v", bound)
	}
}

// exportHead returns the first n bytes of image, read by the admin.
func exportHead(ctx context.Context, t *testing.T, cluster *ceph.Cluster, image string, n int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), image)
	cmd := exec.CommandContext(ctx, "rbd", "-c", cluster.AdminConf, "export", "rbd/"+image, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rbd export %s: %v: %s", image, err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimRight(data[:n], "\x00"))
}
