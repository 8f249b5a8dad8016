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

package attachdetach_test

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kubernetes/pkg/volume"
	volumetypes "k8s.io/kubernetes/pkg/volume/util/types"
)

// TestFencedFailover pins DESIGN.md's controller-side rules (invariants 3
// and 4): a volume that does not allow multi-attach, attached to node-a and
// wanted by a pod on node-b, is attached to node-b only when it is RBD and
// every node holding it is unhealthy; otherwise the Multi-Attach error of
// upstream is reported and nothing is attached.
func TestFencedFailover(t *testing.T) {
	rwo := []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
	rows := []struct {
		name     string
		spec     func() *volume.Spec
		nodes    map[types.NodeName]nodeState // holders; node-b is always Ready
		gateOff  bool
		failover bool
		reason   string
		// plainAttach: attached to node-b with neither a failover nor a
		// Multi-Attach error.
		plainAttach bool
	}{
		{name: "holder Ready gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": ready}},
		{name: "holder NotReady fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": notReady}, failover: true, reason: "node-a (not_ready)"},
		{name: "holder Unknown fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": unknown}, failover: true, reason: "node-a (not_ready)"},
		{name: "holder deleted fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": deleted}, failover: true, reason: "node-a (node_deleted)"},
		{name: "holder out-of-service fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": outOfService}, failover: true, reason: "node-a (out_of_service)"},
		// Upstream allows multi-attach of every inline volume but Azure Disk
		// and Cinder (util.IsMultiAttachAllowed): an inline RBD volume is
		// attached at once, without a failover.
		{name: "inline RBD volume is attached as upstream does", spec: rbdInline,
			nodes: map[types.NodeName]nodeState{"node-a": ready}, plainAttach: true},
		{name: "one holder down and one up gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": notReady, "node-c": ready}},
		{name: "non-RBD RWO volume with holder down gets Multi-Attach", spec: iscsiPV,
			nodes: map[types.NodeName]nodeState{"node-a": notReady}},
		{name: "gate off gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			nodes: map[types.NodeName]nodeState{"node-a": notReady}, gateOff: true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			setFencedFailover(t, !row.gateOff)
			nodes := []*v1.Node{node("node-b", ready)}
			for n, state := range row.nodes {
				if state != deleted {
					nodes = append(nodes, node(string(n), state))
				}
			}
			w := newWorld(t, nodes...)
			var name v1.UniqueVolumeName
			for n := range row.nodes {
				spec := row.spec()
				name = w.schedule(pod("old-"+string(n), n), spec, n)
				w.attached(name, spec, n)
			}
			w.schedule(pod("new", "node-b"), row.spec(), "node-b")

			if row.plainAttach {
				w.waitFor("the attach to node-b", func() bool { return contains(w.nodesOf(name), "node-b") })
				if events := w.events(); hasEvent(events, "FencedFailover") || hasEvent(events, "Multi-Attach") {
					t.Errorf("events %q, want neither a failover nor a Multi-Attach error", events)
				}
				return
			}
			if row.failover {
				if !w.waitFor("the attach to node-b", func() bool { return contains(w.nodesOf(name), "node-b") }) {
					t.Fatalf("events: %q", w.events())
				}
				events := w.events()
				if !hasEvent(events, "Warning FencedFailover", row.reason, "no watcher remains") {
					t.Errorf("no FencedFailover event naming %s; events: %q", row.reason, events)
				}
				if hasEvent(events, "Multi-Attach") {
					t.Errorf("a Multi-Attach error was reported too: %q", events)
				}
				return
			}
			if !w.waitFor("the Multi-Attach error", func() bool {
				return hasEvent(w.events(), "Warning FailedAttachVolume", "Multi-Attach error")
			}) {
				return
			}
			time.Sleep(settle)
			if contains(w.nodesOf(name), "node-b") {
				t.Errorf("attached to node-b despite the Multi-Attach error")
			}
		})
	}
}

// TestFencedFailoverSerializesAndDetachesOldNode checks that the failover
// attach never runs at the same time as another operation on the volume
// (upstream's per-volume operation key) and that, once the old pod is gone,
// the dead node's attachment is detached as upstream does, leaving the
// volume attached to node-b only.
func TestFencedFailoverSerializesAndDetachesOldNode(t *testing.T) {
	setFencedFailover(t, true)
	w := newWorld(t, node("node-a", notReady), node("node-b", ready))
	spec := rbdPV(v1.ReadWriteOnce)
	old := pod("old", "node-a")
	name := w.schedule(old, spec, "node-a")
	w.attached(name, spec, "node-a")

	// The replacement pod arrives as the old one is finally deleted: the
	// attach to node-b and the detach from node-a become due together.
	w.schedule(pod("new", "node-b"), rbdPV(v1.ReadWriteOnce), "node-b")
	w.dsw.DeletePod(volumetypes.UniquePodName(old.UID), name, "node-a")

	w.waitFor("the volume to be attached to node-b only", func() bool {
		nodes := w.nodesOf(name)
		return len(nodes) == 1 && nodes[0] == "node-b"
	})
	time.Sleep(settle)
	w.ops.mu.Lock()
	defer w.ops.mu.Unlock()
	if w.ops.maxSeen != 1 {
		t.Errorf("up to %d operations ran at once on the volume, want 1; operations: %q", w.ops.maxSeen, w.ops.ops)
	}
	if !contains(w.nodesOf(name), "node-b") || contains(w.nodesOf(name), "node-a") {
		t.Errorf("attached to %v, want node-b only", w.nodesOf(name))
	}
	if len(w.ops.ops) < 2 {
		t.Errorf("operations %q, want an attach to node-b and a detach from node-a", w.ops.ops)
	}
}
