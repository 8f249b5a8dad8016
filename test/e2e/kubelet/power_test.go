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
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
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
//   - patched, with a stock kubelet on node-b (kubelets not upgraded yet):
//     the controller refuses the failover and says why
//     (FencedFailoverRefused), with upstream's Multi-Attach error.
func TestPowerOff(t *testing.T) {
	var runs []*scenario
	for _, r := range []variant{{build: stock}, {build: stock, mode: v1.ReadWriteMany}, {build: patched},
		{build: patched, targetKubelet: stock}} {
		t.Run(r.id(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
			defer cancel()
			s := newScenario(ctx, t, "power-off", r)
			runs = append(runs, s)
			testPowerOff(s, r)
		})
	}
	drawTimelines(t, "power-off", runs...)
}

// TestControllerRestart: the power-off, with kube-controller-manager
// stopped before the replacement pod is bound and started again 2 s
// later: the new controller rebuilds its state from the API (node-a's
// status still lists the volume as attached). Patched: it fails over once,
// node-b fences node-a and runs the pod. Stock: Multi-Attach.
func TestControllerRestart(t *testing.T) {
	var runs []*scenario
	for _, build := range []string{stock, patched} {
		r := variant{build: build, restartController: true}
		t.Run(build, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
			defer cancel()
			s := newScenario(ctx, t, "controller-restart", r)
			runs = append(runs, s)
			testPowerOff(s, r)
		})
	}
	drawTimelines(t, "controller-restart", runs...)
}

func testPowerOff(s *scenario, r variant) {
	t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
	podA := s.createPod(nodeA, evictionToleration())
	s.waitRunning(podA, podRunningTimeout)
	// Beside it, a pod without a volume: its replacement shows what a
	// failover costs without storage.
	plainA := createPod(ctx, t, s.claim+"-plain-1", "", nodeA, evictionToleration(), withoutVolume)
	waitPodRunning(ctx, t, plainA, podRunningTimeout)
	const synced = 20
	volA := s.writeRecords(nodeA, podA, synced)
	markerOffset := s.writeMarker(nodeA, volA)
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
	notReady := poll(ctx, t, "node-a not Ready", failoverTimeout(), notReady(nodeA))
	evicted := s.waitEvicted(podA)
	if r.restartController {
		// Down while the replacement is bound: the controller that attaches
		// it rebuilds its state from the API.
		env.kcm.Stop()
		env.kcm = nil
		s.tl.Mark(laneControl, "kube-controller-manager stopped")
	}
	podBCreated := time.Now()
	podB := s.createPod(nodeB, evictionToleration())
	plainCreated := time.Now()
	plainB := createPod(ctx, t, s.claim+"-plain-2", "", nodeB, evictionToleration(), withoutVolume)
	if r.restartController {
		time.Sleep(2 * time.Second)
		// What the new controller rebuilds its state from.
		if !s.attached(nodeA) {
			t.Fatalf("node-a's status no longer lists %s as attached: the restart would prove nothing", s.volumeName())
		}
		useControllerManager(ctx, t, s.build)
		s.tl.Mark(laneControl, "kube-controller-manager started again")
		s.note("kube-controller-manager stopped before app-2 was bound and started again 2 s later (node-a's status still listing the volume)")
	}
	s.note("NotReady %v after the power-off, evicted %v", notReady.Sub(powerOff).Round(100*time.Millisecond),
		evicted.Sub(powerOff).Round(100*time.Millisecond))

	if r.targetKubelet == stock || (s.build == stock && r.mode != v1.ReadWriteMany) {
		msg := s.event(podB, "FailedAttachVolume", "Multi-Attach error", failoverTimeout())
		s.note("event: %s", msg)
		what := "stock"
		if s.build == patched {
			what = "the patched controller, node-b's kubelet stock"
			s.note("event: %s", s.event(podB, "FencedFailoverRefused", "does not fence", failoverTimeout()))
		}
		if !s.nothingOnNodeB() {
			t.Errorf("%s attached or mapped the volume on node-b", what)
		}
		s.outcome = fmt.Sprintf("stuck: Multi-Attach error, app-2 not attached or mapped on node-b for %v (two watch timeouts after the error); app-1 Terminating for good", 2*env.watchTimeout)
		if s.build == patched {
			s.outcome = "refused (FencedFailoverRefused: node-b's kubelet does not fence) with the Multi-Attach error; " +
				fmt.Sprintf("nothing attached or mapped on node-b for %v", 2*env.watchTimeout)
		}
		s.tl.Mark(laneControl, "(still nothing on node-b)")
		s.finish(expectNoDouble)
		return
	}

	// Both followed at once, so that neither's time waits on the other's.
	plainDone := make(chan time.Time, 1)
	go func() { plainDone <- runningAt(ctx, plainB, failoverTimeout()) }()
	running := s.waitRunning(podB, failoverTimeout())
	plainRunning := <-plainDone
	if plainRunning.IsZero() {
		t.Fatalf("%s not Running on node-b within %v", plainB.Name, failoverTimeout())
	}
	s.note("where the time goes: created on node-b → Running: app-2 (the RBD volume) %v, a pod without a volume beside it %v; "+
		"app-1 evicted %v after the power-off",
		running.Sub(podBCreated).Round(100*time.Millisecond), plainRunning.Sub(plainCreated).Round(100*time.Millisecond),
		evicted.Sub(powerOff).Round(100*time.Millisecond))
	found := s.expectEveryRecord(nodeB, podB, synced)
	if s.build == patched {
		if n := s.eventCount(podB, "FencedFailover"); n != 1 {
			t.Errorf("%d FencedFailover events for app-2, want 1: the controller decides once", n)
		}
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
	if s.build == patched {
		s.checkFencedBeforeMap(nodeB, holderA.Address)
	}

	// Node-a wakes up: its client writes once more through its old mount.
	// A fenced client's write may fail or hang: it gets 30 s.
	woke := time.Now()
	s.tl.Mark(laneA, "wakes up")
	if err := nodeA.WakeUp(); err != nil {
		t.Fatal(err)
	}
	// The stale write must come from node-a's own client, alive: a client
	// that died frozen would fail any write, fenced or not.
	if !process.Alive(clients[0]) {
		t.Fatalf("node-a's Ceph client (pid %d) did not survive the power-off: the stale write would prove nothing", clients[0])
	}
	staleW := s.staleWrite(clients[0], volA)
	s.tl.Mark(laneA, "application write after waking: %s", staleW)
	// Up for two watch timeouts, so that the monitor sees node-a's client
	// if it comes back beside node-b's.
	time.Sleep(time.Until(woke.Add(2 * env.watchTimeout)))
	landed := s.staleWriteLanded(markerOffset)
	// Once node-a's clients are dead nothing of theirs is still on its way.
	landedAfterKill := s.staleWriteLandedAfterKill(nodeA, markerOffset)
	s.note("app-2 Running on node-b %v after the power-off; %d of %d synced records read on node-b (journal replayed); node-a's client blocklisted: %v; node-a's write after it woke up: %s, on the image: %v (%v once node-a's clients were killed)",
		running.Sub(powerOff).Round(100*time.Millisecond), found, synced, fenced, staleW, landed, landedAfterKill)
	if s.build == patched {
		if landed || landedAfterKill {
			t.Errorf("node-a's write after it woke up is on the image: node-b should have fenced it")
		}
		s.checkStaleWriteFailed(staleW)
		s.outcome = fmt.Sprintf("failed over: app-2 Running on node-b %v after the power-off, %d/%d records there; node-a fenced before node-b's map, its write after waking failed and is not on the image",
			running.Sub(powerOff).Round(100*time.Millisecond), found, synced)
		s.finish(expectNoDouble)
		return
	}
	if !landed || !landedAfterKill {
		t.Errorf("stock with ReadWriteMany: node-a's write after it woke up is not on the image; the hazard did not show")
	}
	s.outcome = fmt.Sprintf("app-2 Running on node-b %v after the power-off, no fence; node-a woke up and its write landed on the image under node-b's filesystem",
		running.Sub(powerOff).Round(100*time.Millisecond))
	s.finish(expectDouble)
}

// writeMarker writes a block of its own that node-a's application owns
// through vol: where a stale write of node-a lands. It returns the block's
// address on the image, from the filesystem's extent map (512-byte units).
func (s *scenario) writeMarker(n *kubelet.Node, vol string) int64 {
	s.t.Helper()
	return s.writeMarkerOn(n, vol, s.claim)
}

// writeMarkerOn is writeMarker for vol, a mount of image.
func (s *scenario) writeMarkerOn(n *kubelet.Node, vol, image string) int64 {
	t, ctx := s.t, s.ctx
	t.Helper()
	if out, err := n.InNode(ctx, "sh", "-c", `head -c 4096 /dev/zero | tr '\0' A > "$1/marker" && sync "$1/marker"`,
		"app", vol); err != nil {
		t.Fatalf("write the marker block: %v: %s", err, out)
	}
	extents, err := n.InNode(ctx, "filefrag", "-v", "-b512", vol+"/marker")
	if err != nil {
		t.Fatalf("filefrag: %v: %s", err, extents)
	}
	offset := firstPhysicalOffset(t, string(extents)) * 512
	if got := imageBytes(ctx, t, image, offset, 4096); string(got) != strings.Repeat("A", 4096) {
		t.Fatalf("the image at %d does not hold the marker block (%q…): the offset is wrong", offset, clip(got))
	}
	return offset
}

// staleWriteBound is how long node-a's write after it comes back may
// take: a fenced client's write fails with an I/O error (krbd fails it
// at once; the shim's krbd client once its request to the OSD is refused); a write that
// hangs past the bound fails the scenario.
const staleWriteBound = 30 * time.Second

// stale is the result of node-a's write after it comes back.
type stale struct {
	out  []byte
	err  error
	hung bool
	took time.Duration
	// bound is how long the write was given.
	bound time.Duration
}

func (r stale) String() string {
	switch {
	case r.hung:
		return fmt.Sprintf("hung for %v, killed", r.bound)
	case r.err != nil:
		return fmt.Sprintf("failed after %v (%v: %s)", r.took.Round(time.Millisecond), r.err, trim(r.out))
	}
	return fmt.Sprintf("acknowledged after %v", r.took.Round(time.Millisecond))
}

// staleWrite has node-a's application, in the mount namespace of pid,
// overwrite the marker block once more, bypassing the page cache, within
// staleWriteBound (the write and its shell are killed as a group past it).
func (s *scenario) staleWrite(pid int, vol string) stale {
	return s.overwriteMarker(pid, vol, 'S', staleWriteBound)
}

// overwriteMarker has the application, in the mount namespace of pid (a
// Ceph client's, or the node's), overwrite the marker block in vol with
// fill, bypassing the page cache, within bound (the write and its shell
// are killed as a group past it).
func (s *scenario) overwriteMarker(pid int, vol string, fill byte, bound time.Duration) stale {
	ctx, cancel := context.WithTimeout(s.ctx, bound)
	defer cancel()
	start := time.Now()
	out, err := kubelet.InClientNS(ctx, pid, "sh", "-c",
		`mountpoint -q "$1" || { echo "$1 is not mounted"; exit 97; }
head -c 4096 /dev/zero | tr '\0' "$2" | dd of="$1/marker" bs=4096 count=1 conv=notrunc oflag=direct,dsync status=none`,
		"app", vol, string(fill))
	return stale{out: out, err: err, hung: ctx.Err() != nil, took: time.Since(start), bound: bound}
}

// checkStaleWriteFailed fails the scenario unless node-a's write after it
// came back failed within the bound with an I/O error: any other failure
// (no marker, a shell error) says nothing about the fence.
func (s *scenario) checkStaleWriteFailed(r stale) {
	s.t.Helper()
	switch {
	case r.hung:
		s.t.Errorf("node-a's write after it came back hung past %v: a fenced client's write must fail", r.bound)
	case r.err == nil:
		s.t.Errorf("node-a's write after it came back was acknowledged: its client should be fenced")
	case !strings.Contains(string(r.out), "Input/output error"):
		s.t.Errorf("node-a's write after it came back failed, but not with an I/O error: %s", r)
	}
}

// staleWriteLandedAfterKill kills node-a's Ceph clients (so that nothing
// of theirs is still on its way) and reads the marker block again.
func (s *scenario) staleWriteLandedAfterKill(n *kubelet.Node, offset int64) bool {
	s.t.Helper()
	for _, pid := range n.FusePids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	poll(s.ctx, s.t, "node-a's Ceph clients gone", time.Minute, func(ctx context.Context) (bool, error) {
		for _, pid := range n.FusePids() {
			if process.Alive(pid) {
				return false, nil
			}
		}
		return true, nil
	})
	return s.staleWriteLanded(offset)
}

// staleWriteLanded reads the marker block straight from the image: node-b
// never writes it, so whatever is there is node-a's.
func (s *scenario) staleWriteLanded(offset int64) bool {
	s.t.Helper()
	block := string(imageBytes(s.ctx, s.t, s.claim, offset, 4096))
	landed := block == strings.Repeat("S", 4096)
	if !landed && block != strings.Repeat("A", 4096) {
		s.t.Errorf("the marker block reads %q…: neither node-a's old block nor its stale write", clip([]byte(block)))
	}
	if landed {
		s.tl.Mark(laneCeph, "node-a's stale write landed on the image")
	}
	return landed
}

// checkFencedBeforeMap reads the call logs: a blocklist of the client at
// address by n must have exited 0 before n's first map of the image
// started.
func (s *scenario) checkFencedBeforeMap(n *kubelet.Node, address string) {
	s.t.Helper()
	acc := s.account()
	fenceEnd, fenced := time.Time{}, false
	for _, f := range acc.Fences {
		if f.Node == s.lane(n) && f.Address == address {
			fenceEnd, fenced = f.End, true
			break
		}
	}
	var mapStart time.Time
	for _, c := range acc.Calls {
		if c.Node == s.lane(n) && c.Name() == "rbd map" && imageName(c.Start.Image) == s.claim {
			mapStart = c.Start.At
			break
		}
	}
	switch {
	case !fenced:
		s.t.Errorf("%s has no blocklist of %s that exited 0", s.lane(n), address)
	case mapStart.IsZero():
		s.t.Errorf("%s never mapped %s", s.lane(n), s.claim)
	case !fenceEnd.Before(mapStart):
		s.t.Errorf("%s's blocklist of %s ended at %s, its map started at %s: want the blocklist done first", s.lane(n), address,
			fenceEnd.Format(time.RFC3339Nano), mapStart.Format(time.RFC3339Nano))
	default:
		s.note("%s's blocklist of node-a's client exited 0 %v before its map started", s.lane(n),
			mapStart.Sub(fenceEnd).Round(time.Millisecond))
	}
}

// isCall reports whether a logged call is what ("rbd status" for "rbd
// status <image>").
func isCall(call, what string) bool { return call == what || strings.HasPrefix(call, what+" ") }

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
