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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
)

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

// TestPowerOff: node-a runs the pod and writes records through its mount,
// syncing each; then it loses power, as everyone else sees it (frozen,
// link down, kubelet killed). It goes NotReady, its pod is evicted and
// stays Terminating; the harness (playing the ReplicaSet controller)
// creates the replacement on node-b. Then node-a wakes up and its
// application writes once more, to a block of its own.
//
//   - patched: the controller hands the volume over, node-b's kubelet waits
//     for node-a's watch to expire, blocklists node-a's recorded client,
//     maps, replays the journal of the dirty ext4 and runs the pod: every
//     record node-a synced is there; node-a's write after it woke up fails
//     and is not on the image.
//   - stock: Multi-Attach, for good: the replacement never runs.
//   - stock with the PV marked ReadWriteMany (the workaround): node-b maps
//     once the watch expired, without a fence; node-a's write after it woke
//     up lands on the image under node-b's filesystem. The hazard.
func TestPowerOff(t *testing.T) {
	var runs []*scenario
	for _, row := range []struct {
		build string
		mode  v1.PersistentVolumeAccessMode
	}{{stock, v1.ReadWriteOnce}, {stock, v1.ReadWriteMany}, {patched, v1.ReadWriteOnce}} {
		name := row.build
		if row.mode == v1.ReadWriteMany {
			name += "-rwx"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
			defer cancel()
			s := newScenario(ctx, t, "power-off", row.build, row.mode)
			runs = append(runs, s)
			testPowerOff(s, row.mode)
		})
	}
	drawTimelines(t, "power-off", runs...)
}

func testPowerOff(s *scenario, mode v1.PersistentVolumeAccessMode) {
	t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
	podA := s.createPod(nodeA, evictionToleration())
	s.waitRunning(podA, podRunningTimeout)
	const synced = 20
	volA := s.writeRecords(nodeA, podA, synced)
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
	if got := imageBytes(ctx, t, s.claim, markerOffset, 4096); string(got) != strings.Repeat("A", 4096) {
		t.Fatalf("the image at %d does not hold the marker block (%q…): the offset is wrong", markerOffset, clip(got))
	}
	clients := nodeA.FusePids()
	if len(clients) != 1 {
		t.Fatalf("node-a has %d Ceph clients for the image, want 1", len(clients))
	}
	watchers, err := env.cluster.Watchers(ctx, s.claim)
	if err != nil || len(watchers) != 1 {
		t.Fatalf("watchers before the power-off: %v (%v), want node-a's", watchers, err)
	}
	holderA := watchers[0]

	powerOff := time.Now()
	s.tl.SetStart(powerOff)
	s.tl.Mark(laneA, "power-off")
	if err := nodeA.PowerOff(); err != nil {
		t.Fatal(err)
	}
	notReady := poll(ctx, t, "node-a not Ready", failoverTimeout(), func(ctx context.Context) (bool, error) {
		return !ready(ctx, nodeA), nil
	})
	evicted := poll(ctx, t, "app-1 evicted", failoverTimeout(), func(ctx context.Context) (bool, error) {
		p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{})
		return err == nil && p.DeletionTimestamp != nil, nil
	})
	podB := s.createPod(nodeB, evictionToleration())
	s.note("NotReady %v after the power-off, evicted %v", notReady.Sub(powerOff).Round(100*time.Millisecond),
		evicted.Sub(powerOff).Round(100*time.Millisecond))

	if s.build == stock && mode == v1.ReadWriteOnce {
		msg := s.event(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout())
		if !s.neverWithin(2*env.watchTimeout, func() bool { return s.attached(nodeB) || len(nodeB.Devices()) > 0 }) {
			t.Errorf("stock attached or mapped the volume on node-b")
		}
		s.outcome = fmt.Sprintf("stuck: Multi-Attach error, app-2 not attached or mapped on node-b for %v (two watch timeouts after the error); app-1 Terminating for good", 2*env.watchTimeout)
		s.note("event: %s", msg)
		s.tl.Mark(laneControl, "(still nothing on node-b)")
		s.finish(false)
		return
	}

	running := s.waitRunning(podB, failoverTimeout())
	found := s.recordsOn(nodeB, podB, synced)
	if found != synced {
		t.Errorf("node-b reads %d of the %d records node-a synced before the power-off", found, synced)
	}
	fenced, err := env.cluster.Blocklisted(ctx, holderA.Address)
	if err != nil {
		t.Fatal(err)
	}
	if s.build == patched && !fenced {
		t.Errorf("node-a's client %s (client.%d) is not blocklisted after node-b mapped", holderA.Address, holderA.Client)
	}
	if s.build == stock && fenced {
		t.Errorf("stock blocklisted node-a's client %s", holderA.Address)
	}

	// Node-a wakes up: its client writes once more through its old mount.
	// A fenced client's write may fail or hang: it gets 30 s.
	woke := time.Now()
	s.tl.Mark(laneA, "wakes up")
	if err := nodeA.WakeUp(); err != nil {
		t.Fatal(err)
	}
	staleCtx, staleCancel := context.WithTimeout(ctx, 30*time.Second)
	staleOut, staleErr := kubelet.InClientNS(staleCtx, clients[0], "sh", "-c",
		`head -c 4096 /dev/zero | tr '\0' S | dd of="$1/marker" bs=4096 count=1 conv=notrunc oflag=direct,dsync status=none`,
		"app", volA)
	staleCancel()
	s.tl.Mark(laneA, "application write after waking: %s", staleResult(staleOut, staleErr))
	// Up for two watch timeouts, so that the monitor sees node-a's client
	// if it comes back beside node-b's.
	time.Sleep(time.Until(woke.Add(2 * env.watchTimeout)))
	// Straight from the image: node-b never wrote the marker block, so
	// whatever is there is node-a's.
	landed := string(imageBytes(ctx, t, s.claim, markerOffset, 4096)) != strings.Repeat("A", 4096)
	if landed {
		s.tl.Mark(laneCeph, "node-a's stale write landed on the image")
	}
	s.note("app-2 Running on node-b %v after the power-off; %d of %d synced records read on node-b (journal replayed); node-a's client blocklisted: %v; node-a's write after it woke up: %s, on the image: %v",
		running.Sub(powerOff).Round(100*time.Millisecond), found, synced, fenced, staleResult(staleOut, staleErr), landed)
	if s.build == patched {
		if landed {
			t.Errorf("node-a's write after it woke up is on the image: node-b should have fenced it")
		}
		s.outcome = fmt.Sprintf("failed over: app-2 Running on node-b %v after the power-off, %d/%d records there; node-a fenced, its write after waking failed and is not on the image",
			running.Sub(powerOff).Round(100*time.Millisecond), found, synced)
		s.finish(false)
		return
	}
	if !landed {
		t.Errorf("stock with ReadWriteMany: node-a's write after it woke up is not on the image; the hazard did not show")
	}
	s.outcome = fmt.Sprintf("app-2 Running on node-b %v after the power-off, no fence; node-a woke up and its write landed on the image under node-b's filesystem",
		running.Sub(powerOff).Round(100*time.Millisecond))
	s.finish(true)
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
