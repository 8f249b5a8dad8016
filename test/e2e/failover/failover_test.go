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
		})
	}
}

func (s *scenario) pod(n int) string { return fmt.Sprintf("user-%d-%s-%s", n, s.name, s.build) }

// loseNodeA cuts node-a off (power-off, or partition keeping Ceph) and
// waits until it is NotReady and its pod is evicted.
func (s *scenario) loseNodeA(partition bool) {
	s.t.Helper()
	off := time.Now()
	s.lostAt = off
	if partition {
		if err := s.nodeA.Partition(); err != nil {
			s.t.Fatal(err)
		}
	} else {
		s.nodeA.PowerOff()
	}
	notReady := s.waitFor("node-a NotReady", reactDeadline, func() bool { return !s.ready(s.nodeA) })
	s.row.powerOffToNotReady = notReady.Sub(off)
	s.waitFor("the old pod evicted (Terminating)", reactDeadline, func() bool { return s.terminating(s.pod(0)) })
}

// testPowerOff is scenario (a), and with restart scenario (d): the
// controller is down while the replacement pod is bound.
func testPowerOff(ctx context.Context, t *testing.T, s *scenario, restart bool) {
	defer s.mon.finish()
	s.loseNodeA(false)
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
	s.loseNodeA(true)
	bound := s.createPod(1, s.nodeB)
	if s.build == "stock" {
		s.expectStuck(bound)
		return
	}
	attachedAt := s.waitFor("attach to node-b", reactDeadline, func() bool { return s.attached(s.nodeB) })
	s.row.boundToAttach = attachedAt.Sub(bound)
	s.expectEvent(s.pod(1), "FencedFailover", "unhealthy node")
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
	bound := s.createPod(1, s.nodeB)
	attachedAt := s.waitFor("attach to node-b", reactDeadline, func() bool { return s.attached(s.nodeB) })
	s.row.boundToAttach = attachedAt.Sub(bound)
	s.waitFor("node-b mapped", gateDeadline, func() bool { return s.mapping(s.nodeB) != nil })
	mp := s.mapping(s.nodeB)
	s.row.watchExpiryToMap = sinceWatchGone(s, mp.Since)
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
	attachedAt := s.waitFor("attach to node-b", reactDeadline, func() bool { return s.attached(s.nodeB) })
	s.row.boundToAttach = attachedAt.Sub(bound)
	msg := s.expectEvent(s.pod(1), "FencedFailover", "unhealthy node")
	s.waitFor("node-b mapped", gateDeadline, func() bool { return s.mapping(s.nodeB) != nil })
	mp := s.mapping(s.nodeB)
	s.row.watchExpiryToMap = sinceWatchGone(s, mp.Since)
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

// sinceWatchGone is how long after the monitor saw node-a's watch leave the
// image node-b mapped it.
func sinceWatchGone(s *scenario, mapped time.Time) time.Duration {
	gone := s.mon.watchGone()
	if gone.IsZero() {
		s.t.Errorf("node-b mapped the image but the monitor never saw node-a's watch go")
		return 0
	}
	return mapped.Sub(gone)
}
