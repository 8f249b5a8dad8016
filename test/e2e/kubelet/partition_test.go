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

// eachBuild runs scenario name against stock, then patched, and draws the
// two timelines side by side.
func eachBuild(t *testing.T, name string, run func(s *scenario)) {
	eachVariant(t, name, []variant{{build: stock}, {build: patched}}, run)
}

// eachVariant runs scenario name for each variant, in order, and draws
// the timelines side by side.
func eachVariant(t *testing.T, name string, variants []variant, run func(s *scenario)) {
	var runs []*scenario
	for _, r := range variants {
		t.Run(r.id(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
			defer cancel()
			s := newScenario(ctx, t, name, r)
			runs = append(runs, s)
			run(s)
		})
	}
	drawTimelines(t, name, runs...)
}

// TestAPIPartition: node-a loses the API server but keeps
// Ceph (split brain). It goes NotReady and its pod is evicted; the
// replacement goes to node-b. Patched: the controller fails over, but
// node-b's gate sees node-a's live watch and refuses, naming node-a's
// client. Stock: Multi-Attach. Once the partition heals node-a's kubelet
// lets go of the pod (unmount, unmap) and both builds run the replacement
// with every record node-a synced.
func TestAPIPartition(t *testing.T) {
	eachBuild(t, "api-partition", func(s *scenario) {
		t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
		podA := s.createPod(nodeA, evictionToleration())
		s.waitRunning(podA, podRunningTimeout)
		const synced = 10
		s.writeRecords(nodeA, podA, synced)
		watchers, err := env.cluster.Watchers(ctx, s.claim)
		if err != nil || len(watchers) != 1 {
			t.Fatalf("watchers before the partition: %v (%v), want node-a's", watchers, err)
		}

		s.cutOff(nodeA, "cut off from the API server", env.hub.APIServerIP)
		poll(ctx, t, "node-a not Ready", failoverTimeout(), notReady(nodeA))
		s.waitEvicted(podA)
		podB := s.createPod(nodeB, evictionToleration())
		var msg string
		if s.build == patched {
			s.event(podB, "FencedFailover", "attaching it here", failoverTimeout())
			msg = s.event(podB, "FailedMount", fmt.Sprintf("client.%d", watchers[0].Client), failoverTimeout())
		} else {
			msg = s.event(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout())
		}
		s.note("node-b while node-a was cut off: %s", msg)
		// Held for two watch timeouts: node-a's watch lives, nothing maps.
		if !s.neverWithin(2*env.watchTimeout, func() bool { return len(nodeB.Devices()) > 0 }) {
			t.Errorf("node-b mapped the image while node-a's client still watched it")
		}

		healed := s.reconnect(nodeA, "partition healed", env.hub.APIServerIP)
		s.waitGone(podA)
		running := s.waitRunning(podB, failoverTimeout())
		found := s.expectEveryRecord(nodeB, podB, synced)
		how := "the controller attached it once app-1 was gone"
		if s.build == patched {
			how = "attached at once (FencedFailover); node-b's gate held the map until node-a's kubelet unmapped"
		}
		s.outcome = fmt.Sprintf("while cut off: %s; healed: app-2 Running on node-b %v later (%s), %d/%d records",
			map[string]string{patched: "node-b's gate refused, naming node-a's client", stock: "Multi-Attach error"}[s.build],
			running.Sub(healed).Round(100*time.Millisecond), how, found, synced)
		s.finish(expectNoDouble)
	})
}

// TestCephPartition: node-a loses Ceph but keeps the API server, so its
// watch expires while it still holds the image (Ready, not evicted). Its
// pod is deleted and a replacement goes to node-b (a rolling update):
// node-a's kubelet removes the pod (its own mount needs no Ceph) but
// cannot unmap without Ceph, so a Ready node holds the device of a pod
// that is being deleted or gone. Both builds keep upstream's Multi-Attach
// error: patched must not fail over from a live node, though no watcher
// is left to stop a map. Once Ceph is back, node-a lets go and node-b
// runs the replacement with every record node-a synced.
func TestCephPartition(t *testing.T) {
	eachBuild(t, "ceph-partition", func(s *scenario) {
		t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
		podA := s.createPod(nodeA)
		s.waitRunning(podA, podRunningTimeout)
		const synced = 5
		s.writeRecords(nodeA, podA, synced)

		cut := s.cutOff(nodeA, "cut off from Ceph", env.hub.CephIP)
		expired := poll(ctx, t, "node-a's watch expired", failoverTimeout(), func(ctx context.Context) (bool, error) {
			w, err := env.cluster.Watchers(ctx, s.claim)
			return err == nil && len(w) == 0, nil
		})
		s.tl.Mark(laneA, "app-1 deleted")
		if err := env.cp.Client.CoreV1().Pods(namespace).Delete(ctx, podA.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Preconditions, checked at every poll from app-1's deletion to
		// the reconnect: node-a Ready, app-1 being deleted or gone, node-a
		// holding its device. A lapse would make it another scenario.
		var seenTerminating, seenGone bool
		holds := func() {
			if r, err := ready(ctx, nodeA); err != nil || !r {
				t.Fatalf("precondition: node-a is not Ready (%v) while cut off from Ceph", err)
			}
			// Its kubelet removes app-1 once the pod's own mount is gone,
			// which needs no Ceph; the device stays until it can unmap.
			p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				seenGone = true
			case err != nil:
				t.Fatalf("read app-1: %v", err)
			case p.DeletionTimestamp == nil:
				t.Fatalf("precondition: app-1 is not being deleted")
			default:
				seenTerminating = true
			}
			if len(nodeA.Devices()) == 0 {
				t.Fatalf("precondition: node-a let go of its device while cut off from Ceph; the scenario wants a Ready node holding the device of a deleted pod")
			}
		}
		holds()
		podB := s.createPod(nodeB)
		msg := s.eventChecking(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout(), holds)
		if !s.neverWithin(2*env.watchTimeout, func() bool {
			holds()
			return s.attached(nodeB) || len(nodeB.Devices()) > 0
		}) {
			t.Errorf("the volume was attached to or mapped on node-b while node-a was Ready and held it, its pod deleted")
		}
		healed := s.reconnect(nodeA, "Ceph reachable again", env.hub.CephIP)
		s.waitGone(podA)
		poll(ctx, t, "node-a let go of its device", podGoneTimeout, func(context.Context) (bool, error) {
			return len(nodeA.Devices()) == 0, nil
		})
		running := s.waitRunning(podB, failoverTimeout())
		s.expectEveryRecord(nodeB, podB, synced)
		s.note("app-1 while node-a was cut off: seen being deleted %v, seen gone %v", seenTerminating, seenGone)
		s.note("event: %s", msg)
		s.outcome = fmt.Sprintf("node-a's watch expired %v after the cut; app-1 deleted, node-a Ready and holding the device: Multi-Attach error, "+
			"nothing attached or mapped on node-b for %v; Ceph back: node-a let go, app-2 Running on node-b %v later with every record",
			expired.Sub(cut).Round(100*time.Millisecond), 2*env.watchTimeout, running.Sub(healed).Round(100*time.Millisecond))
		s.finish(expectNoDouble)
	})
}

// TestHealthyRace: every node Ready, a second pod for
// the claim on node-b (a rolling update). Both builds: upstream's
// Multi-Attach error, nothing attached or mapped on node-b (invariant 3).
func TestHealthyRace(t *testing.T) {
	eachBuild(t, "healthy-race", func(s *scenario) {
		t, ctx := s.t, s.ctx
		podA := s.createPod(s.nodeA)
		s.waitRunning(podA, podRunningTimeout)
		mappings := s.nodeA.Mappings()
		if len(mappings) != 1 {
			t.Fatalf("node-a has %d mappings, want 1", len(mappings))
		}
		holder := mappings[0].Client
		s.tl.SetStart(time.Now())
		podB := s.createPod(s.nodeB)
		// The scenario's preconditions, for its whole window: both nodes
		// Ready and node-a's watch on the image. A lapse would make it
		// another scenario (a failover), so it fails the run.
		checks := 0
		healthy := func() {
			checks++
			for _, n := range []*kubelet.Node{s.nodeA, s.nodeB} {
				if r, err := ready(ctx, n); err != nil || !r {
					t.Fatalf("%s not Ready (%v) during the healthy race: its precondition does not hold", s.lane(n), err)
				}
			}
			watchers, err := env.cluster.Watchers(ctx, s.claim)
			if err != nil {
				t.Fatalf("read the watchers: %v", err)
			}
			for _, w := range watchers {
				if w.Client == holder {
					return
				}
			}
			t.Fatalf("node-a's watch (client.%d) is not on the image during the healthy race (watchers %v): its precondition does not hold",
				holder, watchers)
		}
		msg := s.eventChecking(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout(), healthy)
		if !s.neverWithin(2*env.watchTimeout, func() bool {
			healthy()
			return s.attached(s.nodeB) || len(s.nodeB.Devices()) > 0
		}) {
			t.Errorf("the volume was attached to or mapped on node-b while node-a ran the pod")
		}
		s.note("event: %s; both nodes Ready and node-a's watch present at each of %d checks", msg, checks)
		s.outcome = fmt.Sprintf("Multi-Attach error, nothing attached or mapped on node-b for %v", 2*env.watchTimeout)
		s.finish(expectNoDouble)
	})
}

// TestShortNotReady: node-a loses the API server for a while (a kubelet
// restart, a short partition) but its pod is not evicted (it tolerates an
// unreachable node for upstream's 300 s), while a second pod for the claim
// waits on node-b. Both builds: Multi-Attach while node-a is NotReady; once
// it is Ready again the volume is attached to node-a only, its pod runs.
func TestShortNotReady(t *testing.T) {
	eachBuild(t, "short-notready", func(s *scenario) {
		t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
		podA := s.createPod(nodeA, tolerateUnreachable(300*time.Second))
		s.waitRunning(podA, podRunningTimeout)
		s.cutOff(nodeA, "cut off from the API server", env.hub.APIServerIP)
		poll(ctx, t, "node-a not Ready", failoverTimeout(), notReady(nodeA))
		podB := s.createPod(nodeB)
		msg := s.event(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout())
		if !s.neverWithin(env.watchTimeout, func() bool { return s.attached(nodeB) || len(nodeB.Devices()) > 0 }) {
			t.Errorf("the volume was attached to or mapped on node-b while node-a was only NotReady")
		}
		s.reconnect(nodeA, "partition healed", env.hub.APIServerIP)
		poll(ctx, t, "node-a Ready again", failoverTimeout(), func(ctx context.Context) (bool, error) { return ready(ctx, nodeA) })
		if !s.neverWithin(env.watchTimeout, func() bool { return s.attached(nodeB) || len(nodeB.Devices()) > 0 || !s.attached(nodeA) }) {
			t.Errorf("after node-a came back the volume is not attached to node-a only")
		}
		p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp != nil || p.Status.Phase != v1.PodRunning {
			t.Errorf("node-a's pod did not keep running: %v", err)
		}
		s.note("event: %s", msg)
		s.outcome = "Multi-Attach error while node-a was NotReady; attached to node-a only once it was Ready again, its pod Running"
		s.finish(expectNoDouble)
	})
}

// TestCutOff: node-a keeps running, its application writing, but
// loses the API server and Ceph at once (its switch fails): neither frozen
// nor killed. Its watch expires, it goes NotReady, its pod is evicted; the
// replacement goes to node-b.
//
//   - patched: node-b fences node-a's client before its map and runs the pod
//     with every record node-a synced. node-a's application writes while
//     it is still cut off and node-a is reconnected: that write, queued in
//     its client, fails and is not on the image. node-a's kubelet then lets
//     go of the evicted pod (unmount, unmap) on a fenced client.
//   - stock: Multi-Attach while node-a is cut off; once it is reconnected
//     its kubelet lets go, and node-b runs the pod with every record.
//   - stock with the PV ReadWriteMany (the unfenced control): node-b runs
//     the pod while node-a is cut off; node-a's write across the reconnect
//     lands on the image under node-b's filesystem.
func TestCutOff(t *testing.T) {
	variants := []variant{{build: stock}, {build: stock, mode: v1.ReadWriteMany}, {build: patched}}
	eachVariant(t, "cut-off", variants, func(s *scenario) {
		t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
		podA := s.createPod(nodeA, evictionToleration())
		s.waitRunning(podA, podRunningTimeout)
		const synced = 20
		volA := s.writeRecords(nodeA, podA, synced)
		markerOffset := s.writeMarker(nodeA, volA)
		clients := nodeA.FusePids()
		watchers, err := env.cluster.Watchers(ctx, s.claim)
		if err != nil || len(watchers) != 1 || len(clients) != 1 {
			t.Fatalf("before the cut: watchers %v (%v), node-a's clients %v; want node-a's one", watchers, err, clients)
		}

		cut := s.cutOff(nodeA, "cut off from the API server and Ceph", env.hub.APIServerIP, env.hub.CephIP)
		poll(ctx, t, "node-a not Ready", failoverTimeout(), notReady(nodeA))
		s.waitEvicted(podA)
		podB := s.createPod(nodeB, evictionToleration())

		reconnect := func() time.Time {
			return s.reconnect(nodeA, "reconnected", env.hub.APIServerIP, env.hub.CephIP)
		}
		if s.build == stock && s.mode != v1.ReadWriteMany {
			msg := s.event(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout())
			if !s.nothingOnNodeB() {
				t.Errorf("stock attached or mapped the volume on node-b while node-a ran the pod")
			}
			back := reconnect()
			s.waitGone(podA)
			running := s.waitRunning(podB, failoverTimeout())
			found := s.expectEveryRecord(nodeB, podB, synced)
			s.note("event: %s", msg)
			s.outcome = fmt.Sprintf("Multi-Attach error while node-a was cut off; reconnected: node-a let go, app-2 Running on node-b %v later, %d/%d records",
				running.Sub(back).Round(100*time.Millisecond), found, synced)
			s.finish(expectNoDouble)
			return
		}

		running := s.waitRunning(podB, failoverTimeout())
		found := s.expectEveryRecord(nodeB, podB, synced)
		if s.build == patched {
			if fenced, err := env.cluster.Blocklisted(ctx, watchers[0].Address); err != nil || !fenced {
				t.Errorf("node-a's client %s is not blocklisted after node-b mapped (%v)", watchers[0].Address, err)
			}
			s.checkFencedBeforeMap(nodeB, watchers[0].Address)
		}

		// node-a's application writes while still cut off: its client
		// queues the write; then node-a is reconnected.
		written := make(chan stale, 1)
		// In the node's namespace rather than the client's: the client's
		// pid goes once node-a, reconnected, unmaps.
		go func() { written <- s.staleWrite(nodeA.MountNSPid(), volA) }()
		time.Sleep(time.Second)
		back := reconnect()
		r := <-written
		s.tl.Mark(laneA, "application write from before the reconnect: %s", r)
		if s.build == patched {
			s.checkStaleWriteFailed(r)
		}
		// Up for two watch timeouts, so that the monitor sees node-a's
		// client if it comes back beside node-b's.
		time.Sleep(time.Until(back.Add(2 * env.watchTimeout)))
		landed := s.staleWriteLanded(markerOffset)
		poll(ctx, t, "app-1 gone (node-a's kubelet let go of it)", podGoneTimeout, func(ctx context.Context) (bool, error) {
			_, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err) && len(nodeA.Devices()) == 0, nil
		})
		// node-a's client is gone now: nothing of it can land any more.
		landedAfter := s.staleWriteLanded(markerOffset)
		s.note("node-a's write across the reconnect: %s, on the image: %v (%v once node-a let go); node-a's unmap ended %v after it was reconnected (its call log)",
			r, landed, landedAfter, s.unmappedAt(nodeA).Sub(back).Round(100*time.Millisecond))
		if s.build == stock {
			// The hazard is that the write lands at all; how long an unfenced
			// client takes to get it there after the reconnect (its OSD
			// sessions, the exclusive lock taken back from node-b's client)
			// is reported, not bounded.
			if !landedAfter {
				t.Errorf("stock with ReadWriteMany: node-a's write across the reconnect is not on the image once node-a let go; the hazard did not show")
			}
			s.outcome = fmt.Sprintf("app-2 Running on node-b %v after the cut, no fence; node-a reconnected and its write landed on the image under node-b's filesystem",
				running.Sub(cut).Round(100*time.Millisecond))
			s.finish(expectDouble)
			return
		}
		if landed || landedAfter {
			t.Errorf("node-a's write across the reconnect is on the image: node-b should have fenced it")
		}
		// node-a's cleanup on a fenced client removes its own record only:
		// node-b's, which the next failover fences, stays.
		mapsB := nodeB.Mappings()
		records := s.holderRecords()
		if len(mapsB) != 1 || len(records) != 1 || !strings.Contains(records[0], `"`+mapsB[0].Address+`"`) {
			t.Errorf("holder records after node-a let go: %q; want node-b's alone (its mappings %v)", records, mapsB)
		}
		s.note("the image's holder record is node-b's alone after node-a let go")
		s.outcome = fmt.Sprintf("failed over: app-2 Running on node-b %v after the cut, %d/%d records; node-a fenced before node-b's map; its write across the reconnect failed and is not on the image; node-a let go of app-1",
			running.Sub(cut).Round(100*time.Millisecond), found, synced)
		s.finish(expectNoDouble)
	})
}
