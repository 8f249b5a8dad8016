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
	"sort"
	"strings"
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
}

func newNode(t *testing.T, name string) *node {
	keyFile, err := cluster.HolderKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, t: t, exec: rbdplugin.NewMapExec(func(args []string) (*ceph.Holder, error) {
		return ceph.StartHolder(cluster.HolderConfig(keyFile), strings.TrimPrefix(args[1], "rbd/"))
	})}
	t.Cleanup(func() {
		if d := n.device(); d != nil {
			d.Kill()
		}
	})
	return n
}

// device is the librbd client standing in for the node's mapping.
func (n *node) device() *ceph.Holder {
	h, _, _ := n.exec.Held()
	return h
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
// then sees no watcher and maps; node-a wakes up and writes. Without the
// fence (stock), node-a's write lands on node-b's data. The patched plugin
// records a mapping only once it has found the device and read its client
// (fence v2), and this suite has no devices: the patched row is the kubelet
// suite's TestPowerOff/patched and TestCutOff/patched, on real
// kubelets with devices.
func TestFrozenHolder(t *testing.T) {
	build := pluginBuild()
	if build == "patched" {
		t.Skip("the patched plugin records only a mapping whose device it found; the kubelet suite plays this row (TestPowerOff/patched)")
	}
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

	// Freeze node-a's mapping and wait for its watch to expire.
	if err := devA.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	waitNoWatchers(ctx, t, vol.Image)
	expired := time.Since(frozen)

	if err := b.attach(vol); err != nil {
		t.Fatalf("node-b attach: %v", err)
	}
	devB := b.device()
	if err := devB.Write(0, "B1 node-b after the failover", 30*time.Second); err != nil {
		t.Fatalf("node-b write: %v", err)
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
	if strings.HasPrefix(got, "A2") {
		landed = 1
	}
	if landed == 0 {
		t.Errorf("the stock plugin's hazard did not show: node-a's write error %v, image reads %q", staleErr, got)
	}
	report("- frozen holder, stock plugin: node-a's watch expired %v after the freeze; node-b mapped without a fence; node-a woke up: %d of 1 write landed, over node-b's data; image reads %q\n",
		expired.Round(100*time.Millisecond), landed, got)
}

// TestFenceRefusedWithoutTheMonitorCapability: the image records a holder
// that is gone, and the volume's Ceph user may not blocklist (no
// mon 'profile rbd'). The real monitors refuse; the attach fails naming the
// capability and the client it could not fence, and nothing is mapped.
func TestFenceRefusedWithoutTheMonitorCapability(t *testing.T) {
	if pluginBuild() != "patched" {
		t.Skip("the stock plugin does not fence")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vol := newImage(t, "nomon")
	key, err := cluster.CreateUser(ctx, "nomon", "mon", "allow r", "osd", "profile rbd pool=rbd")
	if err != nil {
		t.Fatal(err)
	}
	const gone = "10.201.9.9:0/12345"
	if err := cluster.SetImageMeta(ctx, vol.Image, "kubernetes.io/rbd-fence.holder.client.999999",
		`{"address":"`+gone+`","client":999999,"node":"gone-node"}`); err != nil {
		t.Fatal(err)
	}
	vol.User = "nomon"
	e := rbdplugin.NewMapExec(func(args []string) (*ceph.Holder, error) {
		return nil, fmt.Errorf("rbd map ran: %q", args)
	})
	_, err = rbdplugin.NewAttacher(t, e, key).WaitForAttach(vol.Spec(), "", rbdplugin.Pod(), time.Minute)
	for _, want := range []string{"cannot fence the previous holder", gone, "client.999999", "gone-node",
		"the Ceph user client.nomon needs mon 'profile rbd'", "nothing was mapped"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("attach error %v, want it to say %q", err, want)
		}
	}
	if maps := e.Calls("rbd", "map"); len(maps) > 0 {
		t.Errorf("the image was mapped although its previous holder could not be fenced: %q", maps[0].Args)
	}
	if listed, err := cluster.Blocklisted(ctx, gone); err != nil || listed {
		t.Errorf("blocklisted %s: %v (%v), want the monitors to have refused", gone, listed, err)
	}
	report("- fence refused by the monitors (user without mon 'profile rbd'): nothing mapped; %v\n", err)
}

// waitNoWatchers waits until the image has no watcher left.
func waitNoWatchers(ctx context.Context, t *testing.T, image string) {
	t.Helper()
	for {
		w, err := cluster.Watchers(ctx, image)
		if err == nil && len(w) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the watchers of %s did not go: %v %v", image, w, err)
		}
		time.Sleep(100 * time.Millisecond)
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

// TestFenceAndRecordCost measures what the fence adds to an attach: from the
// first "rbd image-meta list" to the start of "rbd map", with nothing to
// fence (an ordinary attach) and with one client to blocklist (a failover:
// the record of a client that is gone, as after a kubelet restart, costs
// the same as a live one's). The record and verify after the map need a
// device, which this suite does not have: the kubelet suite's timelines
// show them. Figures go to the report, not into assertions.
func TestFenceAndRecordCost(t *testing.T) {
	if pluginBuild() != "patched" {
		t.Skip("the stock plugin neither fences nor records")
	}
	t.Parallel()
	var fenceNone, fenceOne []time.Duration
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < 3; i++ {
		vol := newImage(t, fmt.Sprintf("cost-%d", i))
		a := newNode(t, "node-a")
		if err := a.attach(vol); err != nil {
			t.Fatalf("node-a attach: %v", err)
		}
		fenceNone = append(fenceNone, fenceCost(t, a.exec))
		a.device().Close()
		waitNoWatchers(ctx, t, vol.Image)
		gone := fmt.Sprintf("10.201.9.9:0/%d", 20000+i)
		if err := cluster.SetImageMeta(ctx, vol.Image, fmt.Sprintf("kubernetes.io/rbd-fence.holder.client.%d", 990000+i),
			fmt.Sprintf(`{"address":%q,"client":%d,"node":"gone-node"}`, gone, 990000+i)); err != nil {
			t.Fatal(err)
		}
		b := newNode(t, "node-b")
		if err := b.attach(vol); err != nil {
			t.Fatalf("node-b attach: %v", err)
		}
		if len(b.exec.Calls("ceph", "osd")) == 0 {
			t.Fatalf("node-b did not fence the recorded client %s", gone)
		}
		// The plugin asks for 30 days (rbdFenceBlocklistExpiry), not the
		// monitors' one-hour default: a node cut off for longer stays fenced.
		expiry, listed, err := cluster.BlocklistExpiry(ctx, gone)
		if err != nil {
			t.Fatal(err)
		}
		if left := time.Until(expiry); !listed || left < 29*24*time.Hour || left > 31*24*time.Hour {
			t.Errorf("%s blocklisted: %v, its entry expires at %v (in %v), want in about 30 days", gone, listed, expiry, left.Round(time.Hour))
		}
		fenceOne = append(fenceOne, fenceCost(t, b.exec))
	}
	report("- cost of the fence before a map: nothing to fence p50 %v max %v; one client to blocklist p50 %v max %v (%d attaches each)\n",
		p50(fenceNone), maxOf(fenceNone), p50(fenceOne), maxOf(fenceOne), len(fenceOne))
}

func fenceCost(t *testing.T, e *rbdplugin.MapExec) time.Duration {
	t.Helper()
	lists, maps := e.Calls("rbd", "image-meta"), e.Calls("rbd", "map")
	if len(lists) == 0 || len(maps) == 0 {
		t.Fatalf("no image-meta or map call to measure")
	}
	return maps[0].Start.Sub(lists[0].Start)
}

func p50(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond)
}

func maxOf(d []time.Duration) time.Duration {
	m := time.Duration(0)
	for _, x := range d {
		if x > m {
			m = x
		}
	}
	return m.Round(time.Millisecond)
}
