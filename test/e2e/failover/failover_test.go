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

package failover

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/nodeagent"
)

// TestNodeFailure runs every scenario against the stock and the patched
// kube-controller-manager, one build after the other on the same control
// plane and Ceph cluster.
func TestNodeFailure(t *testing.T) {
	for _, build := range []string{"stock", "patched"} {
		t.Run(build, func(t *testing.T) {
			ctx := context.Background()
			kcm, err := env.cp.StartControllerManager(ctx, build, env.kcm[build])
			if err != nil {
				t.Fatalf("start kube-controller-manager (%s): %v", build, err)
			}
			defer kcm.Stop()
			t.Run("a power-off", func(t *testing.T) { testPowerOff(ctx, t, newScenario(ctx, t, kcm, "a", v1.ReadWriteOnce), false) })
			t.Run("b split-brain", func(t *testing.T) { testSplitBrain(ctx, t, newScenario(ctx, t, kcm, "b", v1.ReadWriteOnce)) })
			t.Run("c healthy race", func(t *testing.T) { testHealthyRace(ctx, t, newScenario(ctx, t, kcm, "c", v1.ReadWriteOnce)) })
			t.Run("d controller restart", func(t *testing.T) { testPowerOff(ctx, t, newScenario(ctx, t, kcm, "d", v1.ReadWriteOnce), true) })
			if build == "stock" {
				t.Run("e RWX workaround", func(t *testing.T) { testRWXWorkaround(ctx, t, newScenario(ctx, t, kcm, "e", v1.ReadWriteMany)) })
			}
			// The frozen node: patched with the PV as it is (RWO), stock with
			// the ReadWriteMany workaround, the only way stock fails over.
			mode := v1.ReadWriteOnce
			if build == "stock" {
				mode = v1.ReadWriteMany
			}
			t.Run("f frozen node", func(t *testing.T) { testFrozenNode(ctx, t, newScenario(ctx, t, kcm, "f", mode)) })
			t.Run("g short NotReady", func(t *testing.T) {
				testShortNotReady(ctx, t, newScenario(ctx, t, kcm, "g", v1.ReadWriteOnce, tolerating(5*time.Minute)))
			})
		})
	}
}

func (s *scenario) pod(n int) string { return fmt.Sprintf("user-%d-%s-%s", n, s.name, s.build) }

// loseNodeA cuts node-a off with cut (a power-off, a partition, a freeze)
// and waits until it is NotReady and its pod is evicted.
func (s *scenario) loseNodeA(cut func() error) {
	s.t.Helper()
	s.lostAt = time.Now()
	if err := cut(); err != nil {
		s.t.Fatal(err)
	}
	notReady := s.waitFor("node-a NotReady", reactDeadline, func() bool { return !s.ready(s.nodeA) })
	s.row.powerOffToNotReady = notReady.Sub(s.lostAt)
	s.waitFor("the old pod evicted (Terminating)", reactDeadline, func() bool { return s.terminating(s.pod(0)) })
}

// powerOff is a cut: node-a and its mapping die at once.
func (s *scenario) powerOff() error {
	s.nodeA.PowerOff()
	return nil
}

// attachAndMapOnNodeB waits for the controller to attach the volume to
// node-b and for node-b to map it, records both times and returns the
// mapping.
func (s *scenario) attachAndMapOnNodeB(bound time.Time) *nodeagent.Mapping {
	s.t.Helper()
	s.attachedB = s.waitFor("attach to node-b", reactDeadline, func() bool { return s.attached(s.nodeB) })
	s.row.boundToAttach = s.attachedB.Sub(bound)
	s.waitFor("node-b mapped", gateDeadline, func() bool { return s.mapping(s.nodeB) != nil })
	mp := s.mapping(s.nodeB)
	s.row.watchExpiryToMap = sinceWatchGone(s, mp.Since)
	return mp
}

// testPowerOff is scenario (a), and with restart scenario (d): the
// controller is down while the replacement pod is bound.
func testPowerOff(ctx context.Context, t *testing.T, s *scenario, restart bool) {
	defer s.mon.finish()
	s.loseNodeA(s.powerOff)
	if restart {
		s.kcm.Stop()
	}
	bound := s.createPod(1, s.nodeB)
	if restart {
		time.Sleep(2 * time.Second)
		if err := s.kcm.Start(ctx); err != nil {
			t.Fatalf("restart kube-controller-manager: %v", err)
		}
		s.row.note("kube-controller-manager stopped before the replacement pod was bound and started again 2 s later")
	}
	if s.build == "stock" {
		s.expectStuck(bound)
		return
	}
	s.expectFailover(bound)
}

// testSplitBrain is scenario (b): node-a loses the API server but keeps its
// Ceph client.
func testSplitBrain(ctx context.Context, t *testing.T, s *scenario) {
	defer s.mon.finish()
	old := s.mapping(s.nodeA)
	s.loseNodeA(s.nodeA.Partition)
	bound := s.createPod(1, s.nodeB)
	if s.build == "stock" {
		s.expectStuck(bound)
		return
	}
	s.attachedB = s.waitFor("attach to node-b", reactDeadline, func() bool { return s.attached(s.nodeB) })
	s.row.boundToAttach = s.attachedB.Sub(bound)
	s.expectEvent(s.pod(1), "FencedFailover", "that are down")
	named := fmt.Sprintf("%s (client.%d)", old.Address, old.Client)
	s.waitFor("node-b's gate refusing with node-a's watcher named", gateDeadline, func() bool {
		return strings.Contains(s.attachError(s.nodeB), named)
	})
	if s.mapping(s.nodeB) != nil {
		t.Fatalf("node-b mapped the image while node-a's client lives")
	}
	s.row.note("node-b's gate while node-a's client lived: %q", s.attachError(s.nodeB))
	killed := time.Now()
	s.nodeA.PowerOff()
	s.waitFor("node-b mapped after node-a's client was killed", gateDeadline, func() bool { return s.mapping(s.nodeB) != nil })
	mp := s.mapping(s.nodeB)
	s.row.watchExpiryToMap = sinceWatchGone(s, mp.Since)
	s.row.outcome = "attached to node-b (FencedFailover); gate refused while node-a's client lived, mapped after it was killed"
	s.row.note("node-a's client killed → node-b mapped: %v", mp.Since.Sub(killed).Round(100*time.Millisecond))
}

// testHealthyRace is scenario (c): both nodes Ready, a second pod for the
// same volume on node-b.
func testHealthyRace(ctx context.Context, t *testing.T, s *scenario) {
	defer s.mon.finish()
	s.createPod(1, s.nodeB)
	msg := s.expectEvent(s.pod(1), "FailedAttachVolume", "Multi-Attach error")
	if !s.neverWithin(env.watchTimeout, func() bool { return s.attached(s.nodeB) || s.mapping(s.nodeB) != nil }) {
		t.Errorf("the volume was attached to or mapped on node-b while node-a is healthy\n%s", s.diagnostics())
	}
	s.row.outcome = "Multi-Attach error; nothing attached or mapped on node-b"
	s.row.note("event: %s", msg)
}

// testRWXWorkaround is scenario (e): the PV marked ReadWriteMany on stock.
// The controller attaches at once; only the gate holds node-b off.
func testRWXWorkaround(ctx context.Context, t *testing.T, s *scenario) {
	defer s.mon.finish()
	off := time.Now()
	s.nodeA.PowerOff()
	mp := s.attachAndMapOnNodeB(s.createPod(1, s.nodeB))
	s.row.outcome = "attached to node-b at once (no RWO check); the gate held the map until node-a's watch expired"
	s.row.note("power-off → node-b mapped: %v (replacement pod bound right after the power-off)", mp.Since.Sub(off).Round(100*time.Millisecond))
}

// expectStuck checks what stock does: a Multi-Attach error and no attach to
// node-b within three watch timeouts.
func (s *scenario) expectStuck(bound time.Time) {
	s.t.Helper()
	msg := s.expectEvent(s.pod(1), "FailedAttachVolume", "Multi-Attach error")
	if !strings.Contains(msg, "Volume is already used by pod(s)") {
		s.t.Errorf("Multi-Attach event %q does not name the pods using the volume", msg)
	}
	wait := 3*env.watchTimeout - time.Since(bound)
	if !s.neverWithin(wait, func() bool { return s.attached(s.nodeB) || s.mapping(s.nodeB) != nil }) {
		s.t.Errorf("stock attached or mapped the volume on node-b\n%s", s.diagnostics())
		return
	}
	s.row.outcome = fmt.Sprintf("stuck: Multi-Attach error, no attach to node-b in %v", 3*env.watchTimeout)
	s.row.note("event: %s", msg)
}

// expectFailover checks what the patch does after a power-off: attach to
// node-b with a FencedFailover event, and a map only after node-a's watch
// expired (the monitor counts any overlap as a double mapping).
func (s *scenario) expectFailover(bound time.Time) {
	s.t.Helper()
	mp := s.attachAndMapOnNodeB(bound)
	msg := s.expectEvent(s.pod(1), "FencedFailover", "that are down")
	s.row.outcome = "failed over: attached to node-b (FencedFailover), mapped after node-a's watch expired"
	s.row.note("power-off → node-b mapped: %v", mp.Since.Sub(s.lostAt).Round(100*time.Millisecond))
	s.row.note("event: %s", msg)
}

// expectEvent waits for an event with reason on pod whose message contains
// want, and returns the message.
func (s *scenario) expectEvent(pod, reason, want string) string {
	s.t.Helper()
	var msg string
	s.waitFor(fmt.Sprintf("a %s event on %s", reason, pod), reactDeadline, func() bool {
		msg = s.event(pod, reason)
		return strings.Contains(msg, want)
	})
	return msg
}

// sinceWatchGone is how long node-b took to map the image once it could:
// from the later of node-a's watch leaving the image (as the monitor saw it)
// and the controller attaching the volume to node-b. It is the node side's
// delay (the gate's step, the fence), not the control plane's.
func sinceWatchGone(s *scenario, mapped time.Time) time.Duration {
	gone := s.mon.watchGone()
	if gone.IsZero() {
		s.t.Errorf("node-b mapped the image but the monitor never saw node-a's watch go")
		return 0
	}
	if s.attachedB.After(gone) {
		gone = s.attachedB
	}
	return mapped.Sub(gone)
}

// testFrozenNode is scenario (f): node-a freezes whole (no API, no Ceph; its
// pod's application was writing) for longer than its watch timeout and the
// eviction, and wakes up after node-b mapped the image. With the fence none
// of node-a's writes after it woke up lands; stock with the ReadWriteMany
// workaround lets them land on node-b's data.
func testFrozenNode(ctx context.Context, t *testing.T, s *scenario) {
	if s.build == "stock" {
		defer s.mon.finishExpectingDoubles()
	} else {
		defer s.mon.finish()
	}
	old := s.mapping(s.nodeA)
	s.waitFor("node-a's application writing", reactDeadline, func() bool { return len(s.appWrites(old, true)) > 0 })
	// Cut node-a off the API server first so that, woken up, it does not
	// hear of its pod's deletion and let go of the mapping: what a frozen
	// kernel's queued writes do, its application then does.
	s.loseNodeA(func() error {
		if err := s.nodeA.Partition(); err != nil {
			return err
		}
		s.waitFor("node-a partitioned", reactDeadline, func() bool { st, err := s.nodeA.State(); return err == nil && st.Partitioned })
		return s.nodeA.Freeze()
	})
	mp := s.attachAndMapOnNodeB(s.createPod(1, s.nodeB))
	s.waitFor("node-b's application writing", reactDeadline, func() bool { return len(s.appWrites(mp, true)) > 0 })

	woke := time.Now()
	if err := s.nodeA.Thaw(); err != nil {
		t.Fatal(err)
	}
	// Node-a's application writes every 200 ms; a fenced client's write may
	// fail at once or hang, so wait for one answer, then give it a while.
	s.waitFor("node-a's application trying to write after it woke up", reactDeadline, func() bool {
		return len(s.appWritesSince(old, woke)) > 0
	})
	// Node-a stays up for two watch timeouts, so that the monitor sees its
	// client if it comes back beside node-b's (a re-registered watch); stock
	// may stop at the first double mapping it shows.
	s.mon.watchUntil(woke.Add(2*env.watchTimeout), s.build == "stock")
	after := s.appWritesSince(old, woke)
	// Acknowledged is what librbd told node-a's application; landed is what
	// is on the image: the slots of every write issued since it woke up
	// (also those still hanging), read back by a client of the harness's
	// (node-b writes elsewhere).
	acked := 0
	for _, w := range after {
		if w.Landed {
			acked++
		}
	}
	var seqs []int
	// The one after the last answer may be in flight (a fenced client's
	// write can hang).
	for seq := after[0].Seq; seq <= after[len(after)-1].Seq+1; seq++ {
		seqs = append(seqs, seq)
	}
	landed := 0
	for _, found := range s.readSlots(0, s.nodeA.Name, seqs) {
		if found {
			landed++
		}
	}
	s.row.staleAttempted, s.row.staleLanded = len(seqs), landed
	s.nodeA.PowerOff()
	s.row.note("node-a's writes after it woke up: %d answered (%d acknowledged by librbd), %d of the slots %d–%d on the image",
		len(after), acked, landed, seqs[0], seqs[len(seqs)-1])
	if s.build == "stock" {
		if landed == 0 {
			t.Errorf("stock with ReadWriteMany: none of node-a's writes after it woke up is on the image; the hazard did not show")
		}
		s.row.outcome = fmt.Sprintf("node-b mapped once node-a's watch expired, without a fence; node-a woke up: %d of %d writes landed", landed, len(seqs))
		return
	}
	if landed > 0 {
		t.Errorf("%d of node-a's writes after it woke up are on the image; node-b should have fenced it", landed)
	}
	s.row.outcome = fmt.Sprintf("failed over; node-b blocklisted node-a's client before its map; node-a woke up: %d of %d writes landed", landed, len(seqs))
	s.row.note("node-a's first write after it woke up: %s", after[0].Error)
}

// testShortNotReady is scenario (g): node-a is NotReady for a while (its
// kubelet restarting, a short partition) but its pod is not evicted, while
// a second pod for the claim waits on node-b (a rolling update). Both builds
// keep the Multi-Attach error; once node-a is Ready again the volume is
// attached to node-a only.
func testShortNotReady(ctx context.Context, t *testing.T, s *scenario) {
	defer s.mon.finish()
	s.lostAt = time.Now()
	if err := s.nodeA.Partition(); err != nil {
		t.Fatal(err)
	}
	notReady := s.waitFor("node-a NotReady", reactDeadline, func() bool { return !s.ready(s.nodeA) })
	s.row.powerOffToNotReady = notReady.Sub(s.lostAt)
	s.createPod(1, s.nodeB)
	msg := s.expectEvent(s.pod(1), "FailedAttachVolume", "Multi-Attach error")
	if !s.neverWithin(env.watchTimeout, func() bool { return s.attached(s.nodeB) || s.mapping(s.nodeB) != nil }) {
		t.Errorf("the volume was attached to or mapped on node-b while node-a was only NotReady\n%s", s.diagnostics())
	}
	if err := s.nodeA.Heal(); err != nil {
		t.Fatal(err)
	}
	s.waitFor("node-a Ready again", reactDeadline, func() bool { return s.ready(s.nodeA) })
	if !s.neverWithin(env.watchTimeout, func() bool { return s.attached(s.nodeB) || s.mapping(s.nodeB) != nil || !s.attached(s.nodeA) }) {
		t.Errorf("after node-a came back the volume is not attached to node-a only\n%s", s.diagnostics())
	}
	if s.terminating(s.pod(0)) || !s.running(s.pod(0)) {
		t.Errorf("node-a's pod did not keep running")
	}
	s.row.outcome = "Multi-Attach error while node-a was NotReady; attached to node-a only once it was Ready again"
	s.row.note("event: %s", msg)
}

// appWrites reads the application log of a mapping; landed keeps only the
// writes that landed.
func (s *scenario) appWrites(mp *nodeagent.Mapping, landed bool) []ceph.AppWrite {
	s.t.Helper()
	writes, err := ceph.ReadAppLog(mp.AppLog)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []ceph.AppWrite
	for _, w := range writes {
		if w.Landed || !landed {
			out = append(out, w)
		}
	}
	return out
}

// appWritesSince returns the writes a mapping's application issued after t
// (a write in flight when node-a froze reached the OSD before it froze).
func (s *scenario) appWritesSince(mp *nodeagent.Mapping, t time.Time) []ceph.AppWrite {
	var out []ceph.AppWrite
	for _, w := range s.appWrites(mp, false) {
		if w.Started.After(t) {
			out = append(out, w)
		}
	}
	return out
}

// readSlots reads back, with a client of its own, the slots of seqs of the
// application of node (tag) whose region starts at base, and says which
// holds that write's record.
func (s *scenario) readSlots(base int64, tag string, seqs []int) []bool {
	s.t.Helper()
	reader, err := env.cluster.Hold(s.image)
	if err != nil {
		s.t.Fatal(err)
	}
	defer reader.Close()
	s.mon.ignore(reader.Client)
	found := make([]bool, len(seqs))
	for i, seq := range seqs {
		data, err := reader.Read(int(ceph.AppSlot(base, seq)), 64, 30*time.Second)
		if err != nil {
			s.t.Fatal(err)
		}
		found[i] = strings.TrimSpace(data) == ceph.AppRecord(tag, seq)
	}
	return found
}
