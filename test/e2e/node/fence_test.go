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
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdplugin"
)

// pluginBuild is which RBD plugin this test binary was compiled against:
// hack/test-e2e.sh runs TestFrozenHolder a second time against the stock
// tree with E2E_PLUGIN=stock, to show the hazard the fence removes.
func pluginBuild() string {
	if b := os.Getenv("E2E_PLUGIN"); b != "" {
		return b
	}
	return "patched"
}

// node is one simulated node's side of the image: the plugin's attach with
// the real rbd and ceph tools, and a librbd writer standing in for the
// kernel mapping that "rbd map" would make.
type node struct {
	name string
	t    *testing.T
	exec *rbdplugin.MapExec
	mu   sync.Mutex
	dev  *ceph.Holder
}

func newNode(t *testing.T, name string) *node {
	n := &node{name: name, t: t}
	keyFile, err := cluster.HolderKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	n.exec = rbdplugin.NewMapExec(func(image string, readOnly bool) error {
		h, err := ceph.StartHolder(cluster.HolderConfig(keyFile), strings.TrimPrefix(image, "rbd/"))
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.dev = h
		n.mu.Unlock()
		return nil
	}, func(string) error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.dev != nil {
			n.dev.Close()
			n.dev = nil
		}
		return nil
	})
	t.Cleanup(func() {
		if d := n.device(); d != nil {
			d.Kill()
		}
	})
	return n
}

func (n *node) device() *ceph.Holder {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dev
}

// attach runs the plugin's WaitForAttach. There is no /dev/rbdN to find
// after the map, so a successful map ends in the plugin's "could not map"
// device timeout; any other error is returned.
func (n *node) attach(vol rbdplugin.Volume) error {
	a := rbdplugin.NewAttacher(n.t, n.exec, cluster.UserKey)
	_, err := a.WaitForAttach(vol.Spec(), "", rbdplugin.Pod(), 5*time.Minute)
	if n.device() != nil && err != nil && strings.Contains(err.Error(), "could not map image") {
		return nil
	}
	if err == nil {
		return fmt.Errorf("WaitForAttach found a device; there is no kernel rbd here")
	}
	return err
}

// TestFrozenHolder is the hazard of an expired watch: node-a's mapping is
// frozen (a paused VM, a hung kernel) until its watch expires; node-b's gate
// then sees no watcher and maps; node-a wakes up and writes. With the fence,
// node-b blocklists node-a's recorded client before it maps, and node-a's
// write fails. Without it (stock), node-a's write lands on node-b's data.
func TestFrozenHolder(t *testing.T) {
	build := pluginBuild()
	vol := newImage(t, "frozen-"+build)
	a, b := newNode(t, "node-a"), newNode(t, "node-b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if err := a.attach(vol); err != nil {
		t.Fatalf("node-a attach: %v", err)
	}
	devA := a.device()
	if err := devA.Write(0, "A1 node-a before the freeze", 30*time.Second); err != nil {
		t.Fatalf("node-a write: %v", err)
	}
	meta, err := cluster.ImageMeta(ctx, vol.Image)
	if err != nil {
		t.Fatal(err)
	}
	recordA := meta[fmt.Sprintf("kubernetes.io/rbd-fence.holder.client.%d", devA.Client)]
	if build == "patched" && !strings.Contains(recordA, devA.Address) {
		t.Fatalf("node-a's mapping %s (client.%d) is not recorded on the image: %v", devA.Address, devA.Client, meta)
	}

	// Freeze node-a's mapping and wait for its watch to expire.
	if err := devA.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	for {
		w, err := cluster.Watchers(ctx, vol.Image)
		if err == nil && len(w) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("node-a's watch never expired")
		}
		time.Sleep(200 * time.Millisecond)
	}
	expired := time.Since(frozen)

	start := time.Now()
	if err := b.attach(vol); err != nil {
		t.Fatalf("node-b attach: %v", err)
	}
	attachB := time.Since(start)
	devB := b.device()
	if err := devB.Write(0, "B1 node-b after the failover", 30*time.Second); err != nil {
		t.Fatalf("node-b write: %v", err)
	}

	// What node-b's plugin ran, in order.
	var fenceAt, mapAt time.Time
	for _, c := range b.exec.Calls("ceph", "osd") {
		if len(c.Args) > 4 && c.Args[3] == "add" && c.Args[4] == devA.Address {
			fenceAt = c.Start
		}
	}
	if maps := b.exec.Calls("rbd", "map"); len(maps) > 0 {
		mapAt = maps[0].Start
		if !contains(maps[0].Args, "noshare") && build == "patched" {
			t.Errorf("node-b's read-write map is not its own Ceph client: %q", maps[0].Args)
		}
	}
	blocklisted, err := cluster.Blocklisted(ctx, devA.Address)
	if err != nil {
		t.Fatal(err)
	}

	// Node-a wakes up and writes.
	if err := devA.Thaw(); err != nil {
		t.Fatal(err)
	}
	staleErr := devA.Write(0, "A2 node-a after it woke up", 60*time.Second)
	reader, err := cluster.Hold(vol.Image)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	got, err := reader.Read(0, 64, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	landed := 0
	if staleErr == nil {
		landed = 1
	}

	switch build {
	case "patched":
		if fenceAt.IsZero() || !blocklisted {
			t.Errorf("node-b did not blocklist node-a's client %s (blocklisted: %v)", devA.Address, blocklisted)
		} else if !fenceAt.Before(mapAt) {
			t.Errorf("node-b blocklisted node-a at %v, after its map at %v", fenceAt, mapAt)
		}
		if staleErr == nil {
			t.Errorf("node-a's write after the failover succeeded; it must fail once node-a is fenced")
		}
		if !strings.HasPrefix(got, "B1") {
			t.Errorf("the image holds %q after the failover, want node-b's data", got)
		}
		meta, err := cluster.ImageMeta(ctx, vol.Image)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := meta[fmt.Sprintf("kubernetes.io/rbd-fence.holder.client.%d", devB.Client)]; !ok || len(holderKeys(meta)) != 1 {
			t.Errorf("after the failover the image's holder records are %v, want node-b's (client.%d) alone", holderKeys(meta), devB.Client)
		}
		report("- frozen holder, patched plugin: node-a's watch expired %v after the freeze; node-b's attach took %v, blocklisted node-a's client %s %v before its map; node-a woke up: %d of 1 write landed (%v); image reads %q\n",
			expired.Round(100*time.Millisecond), attachB.Round(10*time.Millisecond), devA.Address,
			mapAt.Sub(fenceAt).Round(time.Millisecond), landed, staleErr, got)
	default:
		if staleErr != nil || !strings.HasPrefix(got, "A2") {
			t.Errorf("the stock plugin's hazard did not show: node-a's write error %v, image reads %q", staleErr, got)
		}
		report("- frozen holder, stock plugin: node-a's watch expired %v after the freeze; node-b mapped without a fence; node-a woke up: %d of 1 write landed, over node-b's data; image reads %q\n",
			expired.Round(100*time.Millisecond), landed, got)
	}
}

func holderKeys(meta map[string]string) []string {
	var keys []string
	for k := range meta {
		if strings.HasPrefix(k, "kubernetes.io/rbd-fence.holder.") {
			keys = append(keys, k)
		}
	}
	return keys
}
