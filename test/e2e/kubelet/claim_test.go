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
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
)

// TestMapRecordFreeze: node-a's kubelet maps the image for app-1
// and, before its holder record reaches Ceph, the whole node stops (a
// paused VM: frozen, link down, nothing killed). Its watch expires. The
// operator takes it for shut down and taints it out-of-service (upstream's
// non-graceful shutdown; app-1 never started, so the unreachable-node path,
// which waits for a running pod's deletion, does not apply). The
// controller hands the volume to node-b, whose kubelet finds no record of
// node-a, so fences nobody, and maps. Then node-a runs again: its record
// lands, and its verify reads node-b's record (and watch), so it unmaps
// and hands out nothing. Patched only: the record and the verify are the
// fence's.
func TestMapRecordFreeze(t *testing.T) {
	r := variant{build: patched}
	ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
	defer cancel()
	s := newScenario(ctx, t, "map-record-freeze", r)
	nodeA, nodeB := s.nodeA, s.nodeB

	if err := nodeA.HoldRecord(); err != nil {
		t.Fatal(err)
	}
	// However the test ends, the shim must not wait for good.
	t.Cleanup(func() { _ = nodeA.ReleaseRecord() })
	podA := s.createPod(nodeA, evictionToleration())
	poll(ctx, t, "node-a's kubelet mapped and is about to record", podRunningTimeout, func(ctx context.Context) (bool, error) {
		return nodeA.RecordHeld(), nil
	})
	mappings := nodeA.Mappings()
	if len(mappings) != 1 {
		t.Fatalf("node-a has %d mappings at its record, want 1", len(mappings))
	}
	clientA := mappings[0]
	if records := s.holderRecords(); len(records) != 0 {
		t.Fatalf("holder records %q before node-a's record was written: the freeze would come too late", records)
	}

	frozen := time.Now()
	s.tl.SetStart(frozen)
	s.tl.Mark(laneA, "frozen between its map and its record")
	if err := nodeA.Freeze(); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "node-a not Ready", failoverTimeout(), notReady(nodeA))
	taintOutOfService(ctx, t, nodeA)
	s.tl.Mark(laneControl, "node-a tainted out-of-service")
	poll(ctx, t, "app-1 deleted", failoverTimeout(), func(ctx context.Context) (bool, error) {
		p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil), nil
	})
	podB := s.createPod(nodeB, evictionToleration())
	running := s.waitRunning(podB, failoverTimeout())
	const written = 5
	volB := s.writeRecords(nodeB, podB, written)
	// The hazard this row is about: node-a's client has a device, and
	// nobody fenced it (it had no record to read).
	if fenced, err := env.cluster.Blocklisted(ctx, clientA.Address); err != nil || fenced {
		t.Fatalf("node-a's client %s blocklisted: %v (%v); the row needs it unfenced", clientA.Address, fenced, err)
	}

	woke := time.Now()
	s.tl.Mark(laneA, "runs again")
	if err := nodeA.ReleaseRecord(); err != nil {
		t.Fatal(err)
	}
	if err := nodeA.WakeUp(); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "node-a unmapped its device", 3*time.Minute, func(ctx context.Context) (bool, error) {
		return len(nodeA.Devices()) == 0, nil
	})
	unmapped := time.Now()
	s.tl.Mark(laneA, "its mapping is gone")

	// What node-a did after it ran again, from its calls: the record, the
	// verify that failed, the unmap.
	verbs := s.callVerbsSinceList(nodeA, woke)
	for _, want := range []string{"rbd status", "rbd unmap"} {
		if !containsVerb(verbs, want) {
			t.Errorf("node-a's calls after it ran again %q: no %q", verbs, want)
		}
	}
	// The attach failed on the verify (or, if the freeze outlasted the
	// call's deadline, on the record): either way it said so.
	msg := s.event(podA, "FailedMount", "", time.Minute)
	if frozenFor := woke.Sub(frozen); frozenFor < 90*time.Second && !strings.Contains(msg, "did not fence") &&
		!strings.Contains(msg, "want only its own client") {
		t.Errorf("app-1's FailedMount %q does not come from the verify (frozen for %v)", msg, frozenFor.Round(time.Second))
	}
	// Nothing of node-a's is mounted, and app-1 never ran.
	mounts, err := nodeA.Mounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.Contains(m, "/dev/rbd") {
			t.Errorf("node-a has an rbd device mounted: %s", m)
		}
	}
	if seen := s.mon.lastOf("mount/" + laneA); seen != "" {
		t.Errorf("the monitor saw a mount on node-a: %s", seen)
	}
	// node-b's data is whole, and the image's record is node-b's alone.
	out, err := nodeB.InNode(ctx, "cat", volB+"/records")
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%s record %d\n", laneB, written)) {
		t.Errorf("node-b's records after node-a ran again: %v: %q", err, out)
	}
	poll(ctx, t, "the holder record is node-b's alone", time.Minute, func(ctx context.Context) (bool, error) {
		records := s.holderRecords()
		return len(records) == 1 && len(nodeB.Mappings()) == 1 && strings.Contains(records[0], `"`+nodeB.Mappings()[0].Address+`"`), nil
	})
	s.note("app-2 Running on node-b %v after node-a froze (nothing fenced: node-a had no record); node-a ran again and unmapped %v later; app-1's FailedMount: %s",
		running.Sub(frozen).Round(100*time.Millisecond), unmapped.Sub(woke).Round(100*time.Millisecond), msg)
	s.outcome = "node-a, frozen between its map and its record, handed out nothing when it ran again: its verify found node-b's record, it unmapped; node-b's data whole, the record node-b's"
	// node-a's mapping lived unfenced beside node-b's until its verify
	// unmapped it: a mapping, never a mounted device.
	s.finish(expectUnmountedDouble)
}

// TestCopyInUse: node-a runs app-1 on its image and records
// itself as the holder. An operator copies the image ("rbd cp": the copy
// has the metadata, node-a's record included) and app-2 on node-b uses
// the copy read-write. node-b fences nobody: the copied record names
// another image; node-a keeps writing its own image.
func TestCopyInUse(t *testing.T) {
	r := variant{build: patched}
	ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
	defer cancel()
	s := newScenario(ctx, t, "copy-in-use", r)
	nodeA, nodeB := s.nodeA, s.nodeB
	start := time.Now()
	s.tl.SetStart(start)

	podA := s.createPod(nodeA)
	s.waitRunning(podA, podRunningTimeout)
	volA := s.writeRecords(nodeA, podA, 5)
	mappings := nodeA.Mappings()
	if len(mappings) != 1 {
		t.Fatalf("node-a has %d mappings, want 1", len(mappings))
	}
	clientA := mappings[0]

	copyName := s.claim + "-copy"
	if err := env.cluster.CopyImage(ctx, s.claim, copyName); err != nil {
		t.Fatal(err)
	}
	s.tl.Mark(laneControl, "image copied (rbd cp)")
	meta, err := env.cluster.ImageMeta(ctx, copyName)
	if err != nil {
		t.Fatal(err)
	}
	if !holderNamed(meta, clientA.Address) {
		t.Fatalf("the copy's metadata %v does not carry node-a's record: the row would prove nothing", meta)
	}
	bindVolume(ctx, t, copyName, v1.ReadWriteOnce)
	podB := createPod(ctx, t, copyName+"-app", copyName, nodeB)
	s.tl.Mark(laneControl, "pod for the copy created on node-b")
	poll(ctx, t, "the copy's pod Running on node-b", podRunningTimeout, func(ctx context.Context) (bool, error) {
		p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podB.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == v1.PodRunning, nil
	})

	if fenced, err := env.cluster.Blocklisted(ctx, clientA.Address); err != nil || fenced {
		t.Errorf("node-a's client %s blocklisted: %v (%v): mapping the copy fenced the original's holder", clientA.Address, fenced, err)
	}
	if calls := s.callVerbsSinceList(nodeB, start); containsVerb(calls, "ceph osd blocklist") {
		t.Errorf("node-b ran a blocklist for the copy: %q", calls)
	}
	// node-a still writes its own image.
	if out, err := nodeA.InNode(ctx, "sh", "-c", `printf 'after the copy\n' >> "$1/records" && sync "$1/records"`, "app", volA); err != nil {
		t.Errorf("node-a's write after node-b mapped the copy: %v: %s", err, out)
	}
	// The copy's records: node-b's alone once its claim removed the copied one.
	poll(ctx, t, "the copy's holder record is node-b's alone", time.Minute, func(ctx context.Context) (bool, error) {
		meta, err := env.cluster.ImageMeta(ctx, copyName)
		if err != nil {
			return false, nil
		}
		return !holderNamed(meta, clientA.Address) && holderCount(meta) == 1, nil
	})
	if meta, err := env.cluster.ImageMeta(ctx, s.claim); err != nil || !holderNamed(meta, clientA.Address) {
		t.Errorf("the original's records %v (%v): node-a's record should stay", meta, err)
	}
	s.outcome = "node-b mapped the copy read-write and fenced nobody; node-a kept writing its own image; the copy's inherited record removed"
	s.finish(expectNoDouble)
}

// taintOutOfService marks n as shut down, as an operator does for
// upstream's non-graceful node shutdown.
func taintOutOfService(ctx context.Context, t *testing.T, n *kubelet.Node) {
	t.Helper()
	// The node lifecycle controller writes the same Node (its NotReady
	// taints), so an update can lose the race: read again and retry.
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		var node *v1.Node
		node, err = env.cp.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			break
		}
		node.Spec.Taints = append(node.Spec.Taints, v1.Taint{Key: v1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: v1.TaintEffectNoExecute})
		if _, err = env.cp.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
			break
		}
	}
	if err != nil {
		t.Fatalf("taint %s out-of-service: %v", n.Name, err)
	}
}

// holderNamed reports whether meta has a holder record naming addr.
func holderNamed(meta map[string]string, addr string) bool {
	for k, v := range meta {
		if strings.HasPrefix(k, "kubernetes.io/rbd-fence.holder.") && strings.Contains(v, `"`+addr+`"`) {
			return true
		}
	}
	return false
}

func holderCount(meta map[string]string) int {
	n := 0
	for k := range meta {
		if strings.HasPrefix(k, "kubernetes.io/rbd-fence.holder.") {
			n++
		}
	}
	return n
}

func containsVerb(calls []string, verb string) bool {
	for _, c := range calls {
		if isCall(c, verb) {
			return true
		}
	}
	return false
}
