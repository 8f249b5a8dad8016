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
	"reflect"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
)

// TestKubeletRestart: node-a is cut off from the API server (its Ceph
// client lives), its pod is evicted, the replacement goes to node-b.
// node-b's kubelet is killed and started again while it waits there: the
// node's mount namespace and devices stay, as on a host. Patched: the
// restarted kubelet runs the gate again and maps nothing while node-a's
// client watches. Stock: Multi-Attach, as before the restart. The partition
// heals, node-a lets go, and node-b runs the pod with every record node-a
// synced. Then node-b's kubelet is restarted once more, while it runs the
// pod: the restarted kubelet takes over the mount and the mapping its
// predecessor made (reconstruction; patched, its own watch does not count
// against it), maps and unmaps nothing, and the application keeps writing
// through the same mount.
func TestKubeletRestart(t *testing.T) {
	eachBuild(t, "kubelet-restart", func(s *scenario) {
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
		if s.build == patched {
			s.event(podB, "FencedFailover", "attaching it here", failoverTimeout())
			s.event(podB, "FailedMount", fmt.Sprintf("client.%d", watchers[0].Client), failoverTimeout())
		} else {
			s.event(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout())
		}

		s.tl.Mark(laneB, "kubelet killed and started again (waiting for the volume)")
		restarted, err := nodeB.RestartKubelet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		client := fmt.Sprintf("client.%d", watchers[0].Client)
		if s.build == patched {
			poll(ctx, t, "node-b's restarted kubelet refusing, naming node-a's client", failoverTimeout(),
				func(context.Context) (bool, error) {
					return s.callsSince(nodeB, "rbd status", restarted) > 0 &&
						strings.Contains(s.eventSince(podB, "FailedMount", restarted), client), nil
				})
		}
		if !s.neverWithin(2*env.watchTimeout, func() bool { return len(nodeB.Devices()) > 0 }) ||
			s.callsSince(nodeB, "rbd map", restarted) > 0 {
			t.Errorf("node-b's restarted kubelet mapped the image while node-a's client still watched it")
		}

		healed := s.reconnect(nodeA, "partition healed", env.hub.APIServerIP)
		s.waitGone(podA)
		running := s.waitRunning(podB, failoverTimeout())
		s.expectEveryRecord(nodeB, podB, synced)

		// Restarted again, now that it runs the pod.
		mounts, err := nodeB.MountIDs(ctx)
		if err != nil || len(mounts) == 0 {
			t.Fatalf("node-b's mounts before the second restart: %q (%v)", mounts, err)
		}
		devices := nodeB.Devices()
		s.tl.Mark(laneB, "kubelet killed and started again (running app-2)")
		again, err := nodeB.RestartKubelet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		poll(ctx, t, "node-b Ready after its restart", nodeReadyTimeout, func(ctx context.Context) (bool, error) {
			return s.heartbeatSince(nodeB, again), nil
		})
		if s.build == patched {
			// Reconstruction sets the volume up again: the patched plugin
			// reads the watchers of a mapping it found (reclaimImage).
			poll(ctx, t, "node-b's restarted kubelet checking its own mapping", failoverTimeout(),
				func(context.Context) (bool, error) { return s.callsSince(nodeB, "rbd status", again) > 0, nil })
		}
		// Steady for a watch timeout: same mounts, same devices, nothing
		// mapped or unmapped, no mount failure, the pod running.
		time.Sleep(env.watchTimeout)
		after, err := nodeB.MountIDs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(after, mounts) || !reflect.DeepEqual(nodeB.Devices(), devices) {
			t.Errorf("node-b's restart changed its mounts %q → %q or devices %q → %q", mounts, after, devices, nodeB.Devices())
		}
		if n := s.callsSince(nodeB, "rbd map", again) + s.callsSince(nodeB, "rbd unmap", again); n > 0 {
			t.Errorf("node-b's restarted kubelet made %d rbd map or unmap calls for a volume it had mapped", n)
		}
		if msg := s.eventSince(podB, "FailedMount", again); msg != "" {
			t.Errorf("node-b's restarted kubelet failed to set up the volume it had mounted: %s", msg)
		}
		if p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podB.Name, metav1.GetOptions{}); err != nil ||
			p.Status.Phase != v1.PodRunning || p.DeletionTimestamp != nil {
			t.Errorf("app-2 is not running after node-b's restart (%v)", err)
		}
		s.writeRecords(nodeB, podB, 1)
		if w, err := env.cluster.Watchers(ctx, s.claim); err != nil || len(w) != 1 || len(nodeB.Mappings()) != 1 ||
			w[0].Client != nodeB.Mappings()[0].Client {
			t.Errorf("watchers after node-b's restart: %v (%v), want node-b's mapping's alone", w, err)
		}
		if s.build == patched {
			if records := s.holderRecords(); len(records) != 1 || len(nodeB.Mappings()) != 1 ||
				!strings.Contains(records[0], `"`+nodeB.Mappings()[0].Address+`"`) {
				t.Errorf("holder records after node-b's restart: %q, want node-b's mapping's alone", records)
			}
		}

		gate := "Multi-Attach error before the restart, nothing attached or mapped after it"
		if s.build == patched {
			gate = "the gate refused before and after the restart, naming node-a's client"
		}
		s.outcome = fmt.Sprintf("node-b's kubelet restarted while it waited: %s, nothing mapped; healed: app-2 Running on node-b %v later, %d/%d records; "+
			"restarted again while running app-2: same mounts (mount ids) and devices, no map or unmap, no mount failure, a record written after it",
			gate, running.Sub(healed).Round(100*time.Millisecond), synced, synced)
		s.note("rbd calls by node-b's kubelet after its second restart: %s", strings.Join(s.callVerbsSince(nodeB, again), ", "))
		s.finish(expectNoDouble)
	})
}

// callsSince counts n's calls of what ("rbd status", whatever the image)
// since a time.
func (s *scenario) callsSince(n *kubelet.Node, what string, since time.Time) int {
	count := 0
	for _, c := range s.callVerbsSinceList(n, since) {
		if isCall(c, what) {
			count++
		}
	}
	return count
}

// callVerbsSince lists n's calls since a time, a run of one kind folded
// into one entry with its count.
func (s *scenario) callVerbsSince(n *kubelet.Node, since time.Time) []string {
	var out []string
	calls := s.callVerbsSinceList(n, since)
	for i := 0; i < len(calls); {
		j := i
		for j < len(calls) && calls[j] == calls[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s ×%d", calls[i], j-i))
		} else {
			out = append(out, calls[i])
		}
		i = j
	}
	if len(out) == 0 {
		out = []string{"none"}
	}
	return out
}

func (s *scenario) callVerbsSinceList(n *kubelet.Node, since time.Time) []string {
	calls, err := n.Calls()
	if err != nil {
		s.t.Error(err)
	}
	var verbs []string
	for _, c := range calls {
		if !c.At.Before(since) {
			verbs = append(verbs, c.What)
		}
	}
	return verbs
}

// heartbeatSince reports whether n is Ready with a heartbeat after since.
func (s *scenario) heartbeatSince(n *kubelet.Node, since time.Time) bool {
	node, err := env.cp.Client.CoreV1().Nodes().Get(s.ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			// API times are whole seconds: a heartbeat in since's own
			// second may be the old kubelet's.
			return c.Status == v1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since.Truncate(time.Second).Add(time.Second))
		}
	}
	return false
}

// eventCount is how many times reason was said about p.
func (s *scenario) eventCount(p *v1.Pod, reason string) int {
	evs, err := env.cp.Client.CoreV1().Events(namespace).List(s.ctx, metav1.ListOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	n := 0
	for _, e := range evs.Items {
		if e.InvolvedObject.UID == p.UID && e.Reason == reason {
			n += int(max(e.Count, 1))
		}
	}
	return n
}

// holderRecords are the image's holder records (the fence's metadata).
func (s *scenario) holderRecords() []string {
	meta, err := env.cluster.ImageMeta(s.ctx, s.claim)
	if err != nil {
		s.t.Fatal(err)
	}
	var records []string
	for k, v := range meta {
		if strings.HasPrefix(k, "kubernetes.io/rbd-fence.holder.") {
			records = append(records, v)
		}
	}
	return records
}

// eventSince returns the message of a reason event on p seen (first or
// again) after since, or "".
func (s *scenario) eventSince(p *v1.Pod, reason string, since time.Time) string {
	evs, err := env.cp.Client.CoreV1().Events(namespace).List(s.ctx, metav1.ListOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, e := range evs.Items {
		last := e.LastTimestamp.Time
		if last.IsZero() {
			last = e.EventTime.Time
		}
		// Whole seconds: one in since's own second may be from before it.
		if e.InvolvedObject.UID == p.UID && e.Reason == reason && !last.Before(since.Truncate(time.Second).Add(time.Second)) {
			return e.Message
		}
	}
	return ""
}
