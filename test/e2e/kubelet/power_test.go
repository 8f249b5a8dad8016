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

package kubelet

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
)

// failoverTimeout bounds power-off → replacement Running: the node monitor
// grace period, the eviction, the pod's grace period, the watch timeout and
// the kubelet's own retries.
const failoverTimeout = 4 * time.Minute

// podMountedVolume returns where the kubelet mounted claim for pod.
func podMountedVolume(ctx context.Context, t *testing.T, n *kubelet.Node, pod *v1.Pod, claim string) string {
	t.Helper()
	dir := n.PodVolumeDir(string(pod.UID), claim)
	mounts, err := n.Mounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.Fields(m)[1] == dir {
			return dir
		}
	}
	t.Fatalf("%s has no /dev/rbd* mounted at %s: %q", n.Name, dir, mounts)
	return ""
}

// TestPowerOffFailsOverWithTheData: node-a runs the pod and writes records
// through its mount, syncing each; then it loses power as Ceph sees it (its
// Ceph client frozen, its kubelet gone). The node goes NotReady, its pod is
// evicted and stays Terminating; the harness (playing the ReplicaSet
// controller) creates the replacement on node-b. The patched controller
// hands the volume over, node-b's kubelet waits for node-a's watch to
// expire, blocklists node-a's recorded client, maps, replays the journal of
// the dirty ext4 and runs the pod: every record node-a synced is there.
// Then node-a wakes up and writes once more: that write does not reach the
// image.
func TestPowerOffFailsOverWithTheData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := env.cp.Client
	nodeA := startNode(ctx, t, "power-a")
	nodeB := startNode(ctx, t, "power-b")
	claim := createVolume(ctx, t, "power", v1.ReadWriteOnce)
	podA := createPod(ctx, t, "app-1", claim, nodeA, tolerateUnreachable(0))
	poll(ctx, t, "app-1 Running on power-a", podRunningTimeout, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == v1.PodRunning, nil
	})
	volA := podMountedVolume(ctx, t, nodeA, podA, claim)
	const synced = 20
	for i := 1; i <= synced; i++ {
		rec := fmt.Sprintf("power-a record %d", i)
		if out, err := nodeA.InNode(ctx, "sh", "-c", `printf '%s\n' "$1" >> "$2/records" && sync "$2/records"`, "app",
			rec, volA); err != nil {
			t.Fatalf("write record %d: %v: %s", i, err, out)
		}
	}
	// A block of its own that node-a's application owns: where its write
	// after waking up would land. Its address on the image, from the
	// filesystem's extent map (512-byte units).
	if out, err := nodeA.InNode(ctx, "sh", "-c", `head -c 4096 /dev/zero | tr '\0' A > "$1/marker" && sync "$1/marker"`,
		"app", volA); err != nil {
		t.Fatalf("write the marker block: %v: %s", err, out)
	}
	extents, err := nodeA.InNode(ctx, "filefrag", "-v", "-b512", volA+"/marker")
	if err != nil {
		t.Fatalf("filefrag: %v: %s", err, extents)
	}
	markerOffset := firstPhysicalOffset(t, string(extents)) * 512
	if got := imageBytes(ctx, t, "power", markerOffset, 4096); string(got) != strings.Repeat("A", 4096) {
		t.Fatalf("the image at %d does not hold the marker block (%q…): the offset is wrong", markerOffset, clip(got))
	}
	clients := nodeA.FusePids()
	if len(clients) != 1 {
		t.Fatalf("power-a has %d Ceph clients for the image, want 1", len(clients))
	}
	watchers, err := env.cluster.Watchers(ctx, "power")
	if err != nil || len(watchers) != 1 {
		ps, _ := exec.Command("ps", "-eo", "pid,stat,lstart,args").CombinedOutput()
		t.Fatalf("watchers before the power-off: %v (%v), want power-a's; Ceph clients %v; processes:\n%s", watchers, err, clients, ps)
	}
	holderA := watchers[0]

	powerOff := time.Now()
	nodeA.PowerOff()
	notReady := poll(ctx, t, "power-a not Ready", failoverTimeout, func(ctx context.Context) (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, nodeA.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady && c.Status != v1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	evicted := poll(ctx, t, "app-1 evicted", failoverTimeout, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
		return err == nil && p.DeletionTimestamp != nil, nil
	})
	podB := createPod(ctx, t, "app-2", claim, nodeB, tolerateUnreachable(0))
	running := poll(ctx, t, "app-2 Running on power-b", failoverTimeout, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(namespace).Get(ctx, podB.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == v1.PodRunning, nil
	})
	volB := podMountedVolume(ctx, t, nodeB, podB, claim)

	fenced, err := env.cluster.Blocklisted(ctx, holderA.Address)
	if err != nil {
		t.Fatal(err)
	}
	if !fenced {
		t.Errorf("power-a's client %s (client.%d) is not blocklisted after power-b mapped", holderA.Address, holderA.Client)
	}
	out, err := nodeB.InNode(ctx, "cat", volB+"/records")
	if err != nil {
		t.Fatalf("read the records on power-b: %v: %s", err, out)
	}
	found := 0
	for i := 1; i <= synced; i++ {
		if strings.Contains(string(out), fmt.Sprintf("power-a record %d\n", i)) {
			found++
		}
	}
	if found != synced {
		t.Errorf("power-b reads %d of the %d records power-a synced before the power-off:\n%s", found, synced, out)
	}

	// power-a wakes up: its client writes once more through its old mount.
	// A fenced client's write may fail or hang: it gets 30 s.
	nodeA.Thaw()
	staleCtx, staleCancel := context.WithTimeout(ctx, 30*time.Second)
	staleOut, staleErr := kubelet.InClientNS(staleCtx, clients[0], "sh", "-c",
		`head -c 4096 /dev/zero | tr '\0' S | dd of="$1/marker" bs=4096 count=1 conv=notrunc oflag=direct,dsync status=none`,
		"app", volA)
	staleCancel()
	// What is on the image, read from outside every node once power-b is done.
	if err := client.CoreV1().Pods(namespace).Delete(ctx, podB.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "power-b unmaps", podGoneTimeout, func(ctx context.Context) (bool, error) {
		mounts, err := nodeB.Mounts(ctx)
		return err == nil && len(mounts) == 0, nil
	})
	// Straight from the image: node-b never wrote the marker block, so
	// whatever is there is node-a's.
	if got := imageBytes(ctx, t, "power", markerOffset, 4096); string(got) != strings.Repeat("A", 4096) {
		t.Errorf("power-a's write after it woke up is on the image: the marker block reads %q…", clip(got))
	}
	report("- real kubelets, power-off of the node that runs the pod (its Ceph client frozen, its kubelet killed): NotReady %v after the power-off, evicted %v, replacement Running on power-b %v after the power-off; %d of %d synced records read on power-b (journal replayed); power-a's client blocklisted: %v; power-a's write after it woke up: %s, not on the image\n",
		notReady.Sub(powerOff).Round(100*time.Millisecond), evicted.Sub(powerOff).Round(100*time.Millisecond),
		running.Sub(powerOff).Round(100*time.Millisecond), found, synced, fenced, staleResult(staleOut, staleErr))
}

func staleResult(out []byte, err error) string {
	if err != nil {
		return fmt.Sprintf("failed (%v: %s)", err, trim(out))
	}
	return "acknowledged"
}

// firstPhysicalOffset reads the first extent's physical start from
// "filefrag -v" output.
func firstPhysicalOffset(t *testing.T, out string) int64 {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(strings.ReplaceAll(line, ":", " "))
		// "0: 0.. 7: 34816.. 34823: 8: last,eof"
		if len(f) >= 4 && f[0] == "0" {
			var phys int64
			if _, err := fmt.Sscanf(strings.TrimSuffix(f[3], ".."), "%d", &phys); err == nil {
				return phys
			}
		}
	}
	t.Fatalf("no extent in filefrag output:\n%s", out)
	return 0
}

func clip(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}
