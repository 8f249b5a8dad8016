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

// holder is a node the volume is attached to, and its pod there.
type holder struct {
	state nodeState
	// pod: how the pod using the volume there looks.
	pod podState
	// stock: the holder's kubelet does not fence (so its mapping was not
	// recorded on the image).
	stock bool
}

type podState int

const (
	podRunning podState = iota
	// podDeleting: being deleted from the start (evicted, Terminating).
	podDeleting
	// podDeletedLater: scheduled running, then marked for deletion (the
	// update reaches the controller's desired state as a second AddPod).
	podDeletedLater
	// podInGrace: being deleted, its grace period not over yet.
	podInGrace
	// podGraceEndsLater: being deleted, in its grace period until upstream's
	// Multi-Attach error was reported for the new pod, then past it (the
	// update reaches the controller as a second AddPod).
	podGraceEndsLater
)

// TestFencedFailover pins the controller-side rules of docs/design.md: a
// volume that does not allow multi-attach, attached to node-a and wanted by
// a pod on node-b, is attached to node-b only when it is an RBD
// PersistentVolume, every node holding it is down for good (Node deleted,
// tainted out-of-service, or unreachable with a fencing kubelet and its pod
// deleted past its grace period) and node-b's kubelet fences; otherwise
// upstream's Multi-Attach error is reported and nothing is attached.
func TestFencedFailover(t *testing.T) {
	rwo := []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
	rows := []struct {
		name     string
		spec     func() *volume.Spec
		holders  map[types.NodeName]holder
		target   string // node-b's kubelet version; fencingKubelet if empty
		gateOff  bool
		failover bool
		reason   string
		// refused: the patched build says why it does not fail over.
		refused string
		// plainAttach: attached to node-b with neither a failover nor a
		// Multi-Attach error.
		plainAttach bool
	}{
		{name: "holder Ready gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: ready}}},
		{name: "holder Ready with its pod being deleted gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: ready, pod: podDeleting}}},
		{name: "holder NotReady with its pod running gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: notReady}}},
		{name: "holder Unknown with its pod running gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown}}},
		{name: "holder NotReady but posting status with its pod being deleted gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: notReady, pod: podDeleting}}},
		{name: "holder Unknown with its pod in its grace period gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podInGrace}}},
		{name: "holder Unknown with a stock kubelet gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeleting, stock: true}}},
		{name: "holder Unknown with its pod being deleted fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders:  map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeleting}},
			failover: true, reason: "node-a (unreachable_pod_deleted)"},
		{name: "holder Unknown whose pod is deleted later fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders:  map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeletedLater}},
			failover: true, reason: "node-a (unreachable_pod_deleted)"},
		{name: "holder deleted fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders:  map[types.NodeName]holder{"node-a": {state: deleted}},
			failover: true, reason: "node-a (node_deleted)"},
		{name: "holder out-of-service fails over", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders:  map[types.NodeName]holder{"node-a": {state: outOfService}},
			failover: true, reason: "node-a (out_of_service)"},
		{name: "target with a stock kubelet gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeleting}}, target: stockKubelet,
			refused: "the kubelet of node node-b (\"v1.30.14\") does not fence"},
		{name: "target with a stock kubelet gets the refusal once the holder's pod is past its grace period", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podGraceEndsLater}}, target: stockKubelet,
			refused: "the kubelet of node node-b (\"v1.30.14\") does not fence"},
		// Upstream allows multi-attach of every inline volume but Azure Disk
		// and Cinder (util.IsMultiAttachAllowed): an inline RBD volume is
		// attached at once, without a failover.
		{name: "inline RBD volume is attached as upstream does", spec: rbdInline,
			holders: map[types.NodeName]holder{"node-a": {state: ready}}, plainAttach: true},
		{name: "one holder down and one up gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeleting}, "node-c": {state: ready}}},
		{name: "non-RBD RWO volume with holder down gets Multi-Attach", spec: iscsiPV,
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeleting}}},
		{name: "gate off gets Multi-Attach", spec: func() *volume.Spec { return rbdPV(rwo...) },
			holders: map[types.NodeName]holder{"node-a": {state: unknown, pod: podDeleting}}, gateOff: true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			setFencedFailover(t, !row.gateOff)
			target := row.target
			if target == "" {
				target = fencingKubelet
			}
			nodes := []*v1.Node{withKubelet(node("node-b", ready), target)}
			for n, h := range row.holders {
				switch {
				case h.state == deleted:
				case h.stock:
					nodes = append(nodes, withKubelet(node(string(n), h.state), stockKubelet))
				default:
					nodes = append(nodes, node(string(n), h.state))
				}
			}
			w := newWorld(t, nodes...)
			var name v1.UniqueVolumeName
			var graceEnds []func()
			for n, h := range row.holders {
				spec := row.spec()
				old := pod("old-"+string(n), n)
				switch h.pod {
				case podDeleting:
					old = deleting(old, 0)
				case podInGrace:
					old = deleting(old, time.Minute)
				case podGraceEndsLater:
					old = deleting(old, time.Minute)
				}
				name = w.schedule(old, spec, n)
				w.attached(name, spec, n)
				if h.pod == podDeletedLater {
					w.schedule(deleting(old, 0), spec, n)
				}
				if h.pod == podGraceEndsLater {
					n, old := n, old
					graceEnds = append(graceEnds, func() { w.schedule(deleting(old, -time.Second), spec, n) })
				}
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
				time.Sleep(settle)
				events := w.events()
				if n := countEvents(events, "Warning FencedFailover ", row.reason, "blocklists the image's previous holder"); n != 1 {
					t.Errorf("%d FencedFailover events naming %s, want exactly 1; events: %q", n, row.reason, events)
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
			for _, end := range graceEnds {
				end()
			}
			time.Sleep(settle)
			if n := countEvents(w.events(), "Warning FailedAttachVolume", "Multi-Attach error"); n != 1 {
				t.Errorf("%d Multi-Attach errors, want exactly 1 (upstream reports it once)", n)
			}
			if contains(w.nodesOf(name), "node-b") {
				t.Errorf("attached to node-b despite the Multi-Attach error")
			}
			events := w.events()
			if hasEvent(events, "Warning FencedFailover ") {
				t.Errorf("a FencedFailover event without a failover: %q", events)
			}
			if row.refused != "" && fencedFailoverKnown() {
				if !w.waitFor("the refusal", func() bool { return hasEvent(w.events(), "FencedFailoverRefused", row.refused) }) {
					t.Fatalf("no FencedFailoverRefused event saying %q; events: %q", row.refused, w.events())
				}
				time.Sleep(settle)
				events = w.events()
				if n := countEvents(events, "Warning FencedFailoverRefused ", row.refused); n != 1 {
					t.Errorf("%d FencedFailoverRefused events, want exactly 1; events: %q", n, events)
				}
				if contains(w.nodesOf(name), "node-b") {
					t.Errorf("attached to node-b, whose kubelet does not fence")
				}
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
	w := newWorld(t, node("node-a", unknown), node("node-b", ready))
	spec := rbdPV(v1.ReadWriteOnce)
	old := deleting(pod("old", "node-a"), 0)
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
