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
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/calllog"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/timeline"
)

// The builds a scenario runs against: kube-controller-manager and every
// kubelet of the scenario are that build's.
const (
	patched = "patched"
	stock   = "stock"
)

// Lanes of the timelines.
const (
	laneControl = "control plane"
	laneA       = "node-a"
	laneB       = "node-b"
	laneCeph    = "Ceph"
)

// scenarios are the titles of the real-kubelet scenarios, for the report
// and the pictures (docs/testing.md uses the same).
var scenarios = map[string]string{
	"power-off":     "node-a loses power (frozen, link down, kubelet killed); replacement pod on node-b; node-a wakes up",
	"api-partition": "node-a cut off from the API server only (Ceph kept); its pod evicted; replacement on node-b; partition healed",
	"ceph-partition": "node-a cut off from Ceph only (API kept): its watch expires while it runs the pod; " +
		"a second pod for the claim on node-b",
	"controller-restart": "node-a loses power; kube-controller-manager down while the replacement pod is bound on node-b, " +
		"started again 2 s later",
	"cut-off": "node-a, running, cut off from the API server and Ceph at once; replacement pod on node-b; " +
		"node-a reconnected, its application still writing",
	"kubelet-restart": "node-a cut off from the API server only; node-b's kubelet restarted while it waits in the gate; " +
		"partition healed; node-b's kubelet restarted again while it runs the pod",
	"healthy-race": "every node Ready; a second pod for the claim on node-b",
	"map-record-freeze": "node-a frozen whole (nothing killed) after its map and before its holder record; tainted out-of-service; " +
		"replacement on node-b; node-a runs again",
	"map-record-kill": "node-a's kubelet killed, with its call, after its map and before its holder record, while another client " +
		"watches the image; started again; the other client closes the image",
	"copy-in-use":    "node-a runs a pod on its image; the image is copied (rbd cp, records included); a pod on node-b uses the copy",
	"short-notready": "node-a NotReady for a while (API cut off), its pod not evicted; a second pod for the claim on node-b; node-a back",
	"two-volumes": "node-a runs two pods with a volume each, one of them never evicted; patched: node-a cut off from the API server " +
		"and Ceph, the other's replacement on node-b, node-a reconnected writes to the volume it kept; stock: the client of the " +
		"first volume blocklisted by hand, node-a writes to the second",
}

// useControllerManager makes the running kube-controller-manager build's.
func useControllerManager(ctx context.Context, t *testing.T, build string) {
	t.Helper()
	if env.kcm != nil && env.kcm.Build == build {
		return
	}
	if env.kcm != nil {
		env.kcm.Stop()
		env.kcm = nil
	}
	kcm, err := env.cp.StartControllerManager(ctx, build, os.Getenv("E2E_KCM_"+strings.ToUpper(build)))
	if err != nil {
		t.Fatalf("start the %s kube-controller-manager: %v", build, err)
	}
	env.kcm = kcm
}

// scenario is one run of a scenario against one build: two real kubelets of
// that build, that build's controller, one RBD volume, the monitor.
type scenario struct {
	t            *testing.T
	ctx          context.Context
	name, build  string
	mode         v1.PersistentVolumeAccessMode
	nodeA, nodeB *kubelet.Node
	// kubelets is each node's kubelet build, by lane.
	kubelets map[string]string
	claim    string
	tl       *timeline.Timeline
	mon      *monitor
	// pods are the scenario's pods in order; the monitor reads them.
	podsMu  sync.Mutex
	pods    []*v1.Pod
	outcome string
	notes   []string
}

// variant says what a scenario runs: build is kube-controller-manager's and the
// kubelets', mode the PV's access mode (ReadWriteMany: the workaround users
// apply to stock), targetKubelet node-b's kubelet if not build's (an
// upgrade half done), restartController whether kube-controller-manager
// is down while the replacement pod is bound.
type variant struct {
	build             string
	mode              v1.PersistentVolumeAccessMode
	targetKubelet     string
	restartController bool
}

// id names the run in node, volume and subtest names.
func (r variant) id() string {
	id := r.build
	if r.mode == v1.ReadWriteMany {
		id += "-rwx"
	}
	if r.targetKubelet != "" && r.targetKubelet != r.build {
		id += "-" + r.targetKubelet + "-target"
	}
	return id
}

// title names the run in the report and the pictures.
func (r variant) title() string {
	title := r.build
	if r.mode == v1.ReadWriteMany {
		title += " (PV ReadWriteMany)"
	}
	if r.targetKubelet != "" && r.targetKubelet != r.build {
		title += ", node-b's kubelet " + r.targetKubelet
	}
	return title
}

// newScenario starts scenario name for r.
func newScenario(ctx context.Context, t *testing.T, name string, r variant) *scenario {
	t.Helper()
	useControllerManager(ctx, t, r.build)
	id := name + "-" + r.id()
	s := &scenario{t: t, ctx: ctx, name: name, build: r.build, mode: r.mode}
	s.tl = timeline.New(r.title(), laneControl, laneA, laneB, laneCeph)
	target := r.targetKubelet
	if target == "" {
		target = r.build
	}
	s.nodeA = startNode(ctx, t, id+"-a", r.build)
	s.nodeB = startNode(ctx, t, id+"-b", target)
	s.kubelets = map[string]string{laneA: r.build, laneB: target}
	mode := r.mode
	if mode == "" {
		mode = v1.ReadWriteOnce
	}
	s.claim = createVolume(ctx, t, id, mode)
	s.mon = startMonitor(s)
	t.Cleanup(s.mon.stop)
	return s
}

// lane names a node's lane.
func (s *scenario) lane(n *kubelet.Node) string {
	if n == s.nodeA {
		return laneA
	}
	return laneB
}

// createPod creates the scenario's next pod (app-1, app-2, …) on n.
func (s *scenario) createPod(n *kubelet.Node, opts ...podOption) *v1.Pod {
	s.t.Helper()
	return s.createPodOf(s.claim, n, opts...)
}

// createPodOf creates the scenario's next pod on n with claim, another
// volume than the scenario's (a node with two).
func (s *scenario) createPodOf(claim string, n *kubelet.Node, opts ...podOption) *v1.Pod {
	s.t.Helper()
	s.podsMu.Lock()
	next := len(s.pods) + 1
	s.podsMu.Unlock()
	p := createPod(s.ctx, s.t, fmt.Sprintf("%s-app-%d", s.claim, next), claim, n, opts...)
	s.podsMu.Lock()
	s.pods = append(s.pods, p)
	s.podsMu.Unlock()
	s.tl.Mark(laneControl, "pod app-%d created on %s", next, s.lane(n))
	return p
}

// podList is a copy of the scenario's pods.
func (s *scenario) podList() []*v1.Pod {
	s.podsMu.Lock()
	defer s.podsMu.Unlock()
	return append([]*v1.Pod(nil), s.pods...)
}

// appName is "app-N" for the report.
func (s *scenario) appName(p *v1.Pod) string {
	for i, q := range s.podList() {
		if q.UID == p.UID {
			return fmt.Sprintf("app-%d", i+1)
		}
	}
	return p.Name
}

// waitRunning waits until p is Running, and checks that its node's status
// lists the volume as attached (which keeps attached() honest).
func (s *scenario) waitRunning(p *v1.Pod, timeout time.Duration) time.Time {
	s.t.Helper()
	at := poll(s.ctx, s.t, s.appName(p)+" Running", timeout, func(ctx context.Context) (bool, error) {
		q, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		return err == nil && q.Status.Phase == v1.PodRunning, nil
	})
	n := s.nodeA
	if p.Spec.NodeName == s.nodeB.Name {
		n = s.nodeB
	}
	if !s.attached(n) {
		s.t.Errorf("%s Running on %s, whose status does not list %s as attached", s.appName(p), s.lane(n), s.volumeName())
	}
	return at
}

// ready reports whether n's Node is Ready. An API error is not "not
// Ready": it is returned, and a check that gets one fails.
func ready(ctx context.Context, n *kubelet.Node) (bool, error) {
	node, err := env.cp.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("read node %s: %w", n.Name, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue, nil
		}
	}
	return false, nil
}

// notReady is ready's negation, for poll.
func notReady(n *kubelet.Node) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		r, err := ready(ctx, n)
		return !r, err
	}
}

// volumeName is the volume's unique name in the controller's state and
// the Node's status: the RBD plugin's "pool:image".
func (s *scenario) volumeName() v1.UniqueVolumeName {
	return v1.UniqueVolumeName("kubernetes.io/rbd/rbd:" + s.claim)
}

// attached reports whether the volume is in n's status.volumesAttached.
func (s *scenario) attached(n *kubelet.Node) bool {
	node, err := env.cp.Client.CoreV1().Nodes().Get(s.ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, a := range node.Status.VolumesAttached {
		if a.Name == s.volumeName() {
			return true
		}
	}
	return false
}

// waitEvicted waits until p is being deleted (evicted) and returns when it
// saw that.
func (s *scenario) waitEvicted(p *v1.Pod) time.Time {
	s.t.Helper()
	return poll(s.ctx, s.t, s.appName(p)+" evicted", failoverTimeout(), func(ctx context.Context) (bool, error) {
		q, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		return err == nil && q.DeletionTimestamp != nil, nil
	})
}

// waitGone waits until p is gone from the API and returns when it saw that.
func (s *scenario) waitGone(p *v1.Pod) time.Time {
	s.t.Helper()
	return poll(s.ctx, s.t, s.appName(p)+" gone", failoverTimeout(), func(ctx context.Context) (bool, error) {
		_, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// nothingOnNodeB reports whether, for two watch timeouts, the volume was
// neither attached to node-b nor mapped there.
func (s *scenario) nothingOnNodeB() bool {
	return s.neverWithin(2*env.watchTimeout, func() bool { return s.attached(s.nodeB) || len(s.nodeB.Devices()) > 0 })
}

// neverWithin checks cond every poll interval for d (at least once) and
// reports false as soon as it holds.
func (s *scenario) neverWithin(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return false
		}
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(pollInterval)
	}
}

// event waits for an event on p with reason whose message contains part,
// and returns the message.
func (s *scenario) event(p *v1.Pod, reason, part string, timeout time.Duration) string {
	s.t.Helper()
	return s.eventChecking(p, reason, part, timeout, func() {})
}

// eventChecking is event with check run at every poll: a scenario's
// preconditions hold while it waits too.
func (s *scenario) eventChecking(p *v1.Pod, reason, part string, timeout time.Duration, check func()) string {
	s.t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(s.ctx, pollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		check()
		evs, err := env.cp.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.UID == p.UID && e.Reason == reason && strings.Contains(e.Message, part) {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		s.t.Fatalf("no %s event on %s saying %q within %v: %v", reason, s.appName(p), part, timeout, err)
	}
	return msg
}

// writeRecords has the application on n write records through p's volume,
// syncing each, and returns the volume's directory.
func (s *scenario) writeRecords(n *kubelet.Node, p *v1.Pod, count int) string {
	s.t.Helper()
	vol := podMountedVolume(s.ctx, s.t, n, p, s.claim)
	for i := 1; i <= count; i++ {
		rec := fmt.Sprintf("%s record %d", s.lane(n), i)
		if out, err := n.InNode(s.ctx, "sh", "-c", `printf '%s\n' "$1" >> "$2/records" && sync "$2/records"`, "app",
			rec, vol); err != nil {
			s.t.Fatalf("write record %d: %v: %s", i, err, out)
		}
	}
	s.tl.Mark(s.lane(n), "%d records written and synced", count)
	return vol
}

// cutOff starts the scenario's timeline at node n's failure: n is cut off
// from peers. It returns when the cut was made.
func (s *scenario) cutOff(n *kubelet.Node, what string, peers ...net.IP) time.Time {
	s.t.Helper()
	at := time.Now()
	s.tl.SetStart(at)
	s.tl.Mark(s.lane(n), "%s", what)
	for _, peer := range peers {
		if err := n.Net.CutOff(peer); err != nil {
			s.t.Fatal(err)
		}
	}
	return at
}

// reconnect lets n reach peers again and returns when it did.
func (s *scenario) reconnect(n *kubelet.Node, what string, peers ...net.IP) time.Time {
	s.t.Helper()
	s.tl.Mark(s.lane(n), "%s", what)
	for _, peer := range peers {
		if err := n.Net.Reconnect(peer); err != nil {
			s.t.Fatal(err)
		}
	}
	return time.Now()
}

// expectEveryRecord fails the scenario unless n reads, through p's volume,
// every one of the count records node-a synced; it returns how many it
// read.
func (s *scenario) expectEveryRecord(n *kubelet.Node, p *v1.Pod, count int) int {
	s.t.Helper()
	vol := podMountedVolume(s.ctx, s.t, n, p, s.claim)
	out, err := n.InNode(s.ctx, "cat", vol+"/records")
	if err != nil {
		s.t.Fatalf("read the records on %s: %v: %s", n.Name, err, out)
	}
	found := 0
	for i := 1; i <= count; i++ {
		if strings.Contains(string(out), fmt.Sprintf("%s record %d\n", laneA, i)) {
			found++
		}
	}
	if found != count {
		s.t.Errorf("%s reads %d of the %d records node-a synced to %s", s.lane(n), found, count, s.claim)
	}
	return found
}

func (s *scenario) note(format string, args ...interface{}) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

// account computes the scenario's accounting from both nodes' call logs,
// up to now.
func (s *scenario) account() calllog.Accounting {
	s.t.Helper()
	logs := map[string][]calllog.Entry{}
	for _, n := range []*kubelet.Node{s.nodeA, s.nodeB} {
		entries, err := n.CallLog()
		if err != nil {
			s.t.Errorf("%s's call log: %v", s.lane(n), err)
		}
		logs[s.lane(n)] = entries
	}
	return calllog.Account(logs, time.Now())
}

// finish stops the monitor, adds the nodes' calls to the timeline, checks
// the safety verdict (from the call logs) and reports the run.
func (s *scenario) finish(want expectation) {
	s.mon.waitSamples(minSamples, time.Minute)
	s.mon.stop()
	for _, n := range []*kubelet.Node{s.nodeA, s.nodeB} {
		calls, err := n.Calls()
		if err != nil {
			s.t.Error(err)
		}
		for _, c := range calls {
			s.tl.Add(c.At, s.lane(n), "%s", c.What)
			// The shim lets go of a krbd client only when it is fenced
			// (where krbd fails the I/O): anywhere else it would hide a hang.
			if strings.HasPrefix(c.What, "shim aborted the krbd client") {
				f := strings.Fields(c.What)
				if fenced, err := env.cluster.Blocklisted(s.ctx, f[len(f)-1]); err != nil || !fenced {
					s.t.Errorf("%s: the shim aborted the FUSE connection of a client that is not blocklisted (%v): %s",
						s.lane(n), err, c.What)
				}
			}
		}
	}
	acc := s.account()
	s.verdict(acc, want)
	s.mon.crossCheck(acc)
	report("- %s, %s: %s\n", s.name, s.tl.Title, s.outcome)
	for _, n := range s.notes {
		report("  - %s\n", n)
	}
	report("  - %s\n", accountingSummary(acc))
	report("  - sampled (a second view): %d of %d samples saw two or more watchers, %d two unfenced mappings; timeline (s after the failure):\n%s",
		s.mon.doubles, s.mon.samples, s.mon.unfenced, s.tl.Markdown())
}

// unmappedAt is when n's last unmap of the scenario's image ended, from
// its call log (zero if it never unmapped it).
func (s *scenario) unmappedAt(n *kubelet.Node) time.Time {
	var at time.Time
	for _, m := range s.account().Mappings {
		if m.Node == s.lane(n) && imageName(m.Image) == s.claim && m.Gone.After(at) {
			at = m.Gone
		}
	}
	return at
}

// verdict is the scenario's safety verdict, computed from the call logs
// and checked against Ceph's own blocklist: every interval in which two
// read-write mappings of one image were both in use (handed to fsck,
// mkfs, blkid or mount) and neither client was fenced (by the end of a
// blocklist call that exited 0) is a violation, however short.
func (s *scenario) verdict(acc calllog.Accounting, want expectation) {
	t := s.t
	for _, e := range acc.Errors {
		t.Errorf("call log: %s", e)
	}
	mine := 0
	for _, m := range acc.Mappings {
		if imageName(m.Image) == s.claim {
			mine++
		}
		// The patched kubelet maps every read-write image with its own
		// client, so that a fence takes that mapping alone.
		if s.kubelets[m.Node] == patched && !m.ReadOnly && !hasOption(m.Options, "noshare") {
			t.Errorf("%s mapped %s read-write without noshare (options %q)", m.Node, m.Device, m.Options)
		}
	}
	if mine == 0 {
		t.Errorf("the call logs hold no mapping of %s: the verdict would be empty", s.claim)
	}
	violations := acc.Violations()
	switch want {
	case expectDouble:
		if len(violations) == 0 {
			t.Errorf("the hazard did not show: the call logs have no interval in which two unfenced mappings of %s were both in use", s.claim)
		}
	default:
		for _, v := range violations {
			t.Errorf("double mapping: %s", v)
		}
	}
	if want == expectNoDouble {
		for _, o := range acc.Overlaps {
			if !o.InUse {
				t.Errorf("two unfenced mappings: %s", o)
			}
		}
	}
	// Ceph's own blocklist holds every client the logs say was fenced.
	for _, f := range acc.Fences {
		if fenced, err := env.cluster.Blocklisted(s.ctx, f.Address); err != nil || !fenced {
			t.Errorf("%s's blocklist of %s exited 0 at %s, but Ceph's blocklist does not list it (%v)", f.Node, f.Address,
				f.End.Format(time.RFC3339Nano), err)
		}
	}
}

// accountingSummary is the report's line for the verdict.
func accountingSummary(acc calllog.Accounting) string {
	calls := 0
	for _, c := range acc.Calls {
		if c.Start.Tool == "rbd" || c.Start.Tool == "ceph" || strings.HasPrefix(c.Start.Device, "/dev/rbd") {
			calls++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "from the call logs (%d calls, %d mappings, %d fences): %d intervals with two unfenced mappings in use",
		calls, len(acc.Mappings), len(acc.Fences), len(acc.Violations()))
	for _, o := range acc.Overlaps {
		fmt.Fprintf(&b, "; %s", o)
	}
	return b.String()
}

// imageName is the image of "pool/image".
func imageName(poolImage string) string {
	_, image, _ := strings.Cut(poolImage, "/")
	return image
}

// hasOption reports whether a comma-separated map option list has opt.
func hasOption(options, opt string) bool {
	for _, o := range strings.Split(options, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// drawTimelines writes the scenario's picture, its builds side by side,
// beside the report: timeline-<name>.svg.
func drawTimelines(t *testing.T, name string, runs ...*scenario) {
	var panels []*timeline.Timeline
	for _, s := range runs {
		if s != nil {
			panels = append(panels, s.tl)
		}
	}
	if len(panels) == 0 {
		return
	}
	path := filepath.Join(filepath.Dir(env.dir), "timeline-"+name+".svg")
	if err := os.WriteFile(path, []byte(timeline.SVG(name+": "+scenarios[name], panels...)), 0o644); err != nil {
		t.Error(err)
	}
	report("- timeline picture: %s\n", filepath.Base(path))
}
