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
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/controlplane"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/nodeagent"
)

// Deadlines of the harness's waits. They fail only a run that is stuck (a
// loaded machine must not fail a correct one); how long things took goes in
// the report.
const (
	// reactDeadline: a controller or a node agent acting on a change.
	reactDeadline = 2 * time.Minute
	// gateDeadline: a node's watcher gate running its whole backoff, and
	// the retry after it.
	gateDeadline = 3 * time.Minute
)

// scenario is one scenario run against one build.
type scenario struct {
	t     *testing.T
	ctx   context.Context
	name  string // "a", "b", ...
	build string // "stock" or "patched"
	kcm   *controlplane.ControllerManager
	// image is the RBD image; volume the attach/detach controller's unique
	// name for it.
	image, pv, pvc, volume string
	nodeA, nodeB           *nodeagent.Node
	mon                    *monitor
	row                    *row
	// lostAt is when node-a was powered off or partitioned.
	lostAt time.Time
	// attachedB is when the controller attached the volume to node-b.
	attachedB time.Time
	// tolerate is how long pods tolerate an unreachable or not-ready node
	// before the taint eviction controller evicts them.
	tolerate time.Duration
}

// scenarioOption changes how a scenario is set up.
type scenarioOption func(*scenario)

// tolerating makes pods tolerate an unreachable node for d (the default is
// 0: evicted at once).
func tolerating(d time.Duration) scenarioOption { return func(s *scenario) { s.tolerate = d } }

// newScenario starts node-a and node-b, creates the image, the PV (with
// accessMode) and its bound claim, and a pod on node-a that has mapped the
// image.
func newScenario(ctx context.Context, t *testing.T, kcm *controlplane.ControllerManager, name string, accessMode v1.PersistentVolumeAccessMode, opts ...scenarioOption) *scenario {
	t.Helper()
	id := name + "-" + kcm.Build
	s := &scenario{t: t, ctx: ctx, name: name, build: kcm.Build, kcm: kcm,
		image: "img-" + id, pv: "user-pv-" + id, pvc: "user-pvc-" + id}
	for _, opt := range opts {
		opt(s)
	}
	s.volume = "kubernetes.io/rbd/rbd:" + s.image
	s.row = env.report.row(name, kcm.Build)
	if err := env.cluster.CreateImage(ctx, s.image, 16); err != nil {
		t.Fatalf("create image: %v", err)
	}
	var err error
	if s.nodeA, err = nodeagent.Launch(id+"-node-a", env.agents[kcm.Build]); err != nil {
		t.Fatalf("start node-a: %v", err)
	}
	t.Cleanup(s.nodeA.PowerOff)
	// Node-b's application writes 1 MiB further on than node-a's, so that
	// each node's records can be read back apart.
	optsB := env.agents[kcm.Build]
	optsB.AppOffset = 1 << 20
	if s.nodeB, err = nodeagent.Launch(id+"-node-b", optsB); err != nil {
		t.Fatalf("start node-b: %v", err)
	}
	t.Cleanup(s.nodeB.PowerOff)
	t.Cleanup(s.deleteObjects)
	s.waitFor("both nodes Ready", reactDeadline, func() bool { return s.ready(s.nodeA) && s.ready(s.nodeB) })
	s.createVolume(accessMode)
	s.createPod(0, s.nodeA)
	s.waitFor("node-a mapped the image and runs the pod", reactDeadline, func() bool {
		return s.mapping(s.nodeA) != nil && s.running(s.pod(0))
	})
	s.mon = startMonitor(s)
	t.Cleanup(s.mon.stop)
	// The monitor must see node-a's mapping among the image's watchers, or
	// it could not see a double mapping either.
	s.waitFor("the safety monitor seeing node-a's watch", reactDeadline, s.mon.sawOldWatch)
	return s
}

func (s *scenario) createVolume(mode v1.PersistentVolumeAccessMode) {
	client := env.cp.Client
	size := resource.MustParse("16Mi")
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: s.pvc, Namespace: namespace},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{mode},
			VolumeName:  s.pv,
		},
	}
	// Set from JSON: the field's Go type was renamed in v1.29
	// (VolumeResourceRequirements), its JSON was not, and the suite builds
	// against every line.
	if err := json.Unmarshal([]byte(`{"spec":{"resources":{"requests":{"storage":"16Mi"}}}}`), pvc); err != nil {
		s.t.Fatalf("claim resources: %v", err)
	}
	pvc, err := client.CoreV1().PersistentVolumeClaims(namespace).Create(s.ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("create PVC: %v", err)
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: s.pv},
		Spec: v1.PersistentVolumeSpec{
			Capacity:    v1.ResourceList{v1.ResourceStorage: size},
			AccessModes: []v1.PersistentVolumeAccessMode{mode},
			PersistentVolumeSource: v1.PersistentVolumeSource{RBD: &v1.RBDPersistentVolumeSource{
				CephMonitors: []string{env.cluster.Monitor}, RBDPool: "rbd", RBDImage: s.image, RadosUser: "kube",
				FSType: "ext4", SecretRef: &v1.SecretReference{Name: secretName, Namespace: namespace},
			}},
			ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: namespace, Name: s.pvc, UID: pvc.UID},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
		},
	}
	pv, err = client.CoreV1().PersistentVolumes().Create(s.ctx, pv, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("create PV: %v", err)
	}
	pv.Status.Phase = v1.VolumeBound
	if _, err := client.CoreV1().PersistentVolumes().UpdateStatus(s.ctx, pv, metav1.UpdateOptions{}); err != nil {
		s.t.Fatalf("bind PV: %v", err)
	}
	// No PV controller runs: the harness binds the pre-bound pair.
	pvc.Status.Phase = v1.ClaimBound
	pvc.Status.AccessModes = []v1.PersistentVolumeAccessMode{mode}
	pvc.Status.Capacity = v1.ResourceList{v1.ResourceStorage: size}
	if _, err := client.CoreV1().PersistentVolumeClaims(namespace).UpdateStatus(s.ctx, pvc, metav1.UpdateOptions{}); err != nil {
		s.t.Fatalf("bind PVC: %v", err)
	}
}

// createPod creates a pod bound to node that uses the claim. No scheduler
// or ReplicaSet controller runs: the harness plays both. Unless the scenario
// says otherwise the pod does not tolerate an unreachable or not-ready node,
// so the taint eviction controller evicts it as soon as the node is tainted.
func (s *scenario) createPod(n int, node *nodeagent.Node) time.Time {
	name := s.pod(n)
	tolerate, grace := int64(s.tolerate/time.Second), int64(2)
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "user"}},
		Spec: v1.PodSpec{
			NodeName: node.Name,
			// The controller fails over only once an evicted pod's grace
			// period is over; 2 s instead of the default 30 s keeps the
			// suite short.
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []v1.Container{{Name: "user", Image: "registry.k8s.io/pause:3.9"}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: s.pvc}}}},
			Tolerations: []v1.Toleration{
				{Key: v1.TaintNodeUnreachable, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: &tolerate},
				{Key: v1.TaintNodeNotReady, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: &tolerate},
			},
		},
	}
	if _, err := env.cp.Client.CoreV1().Pods(namespace).Create(s.ctx, pod, metav1.CreateOptions{}); err != nil {
		s.t.Fatalf("create pod %s: %v", name, err)
	}
	return time.Now()
}

// waitFor polls cond every 100 ms and fails the test after timeout.
func (s *scenario) waitFor(what string, timeout time.Duration, cond func() bool) time.Time {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not within %v\n%s", what, timeout, s.diagnostics())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Now()
}

// neverWithin reports whether cond stays false for d; it checks at least
// once, also when d is not positive.
func (s *scenario) neverWithin(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return false
		}
		if !time.Now().Before(deadline) {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *scenario) node(n *nodeagent.Node) *v1.Node {
	node, err := env.cp.Client.CoreV1().Nodes().Get(s.ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return node
}

func (s *scenario) ready(n *nodeagent.Node) bool {
	node := s.node(n)
	if node == nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// attached reports whether the controller lists the volume as attached to n.
func (s *scenario) attached(n *nodeagent.Node) bool {
	node := s.node(n)
	if node == nil {
		return false
	}
	for _, av := range node.Status.VolumesAttached {
		if string(av.Name) == s.volume {
			return true
		}
	}
	return false
}

// mapping returns n's mapping of the image, if it has one.
func (s *scenario) mapping(n *nodeagent.Node) *nodeagent.Mapping {
	st, err := n.State()
	if err != nil {
		return nil
	}
	for i := range st.Mappings {
		if st.Mappings[i].Volume == s.volume {
			return &st.Mappings[i]
		}
	}
	return nil
}

// attachError returns n's last WaitForAttach error for the volume.
func (s *scenario) attachError(n *nodeagent.Node) string {
	st, err := n.State()
	if err != nil {
		return ""
	}
	for _, e := range st.AttachError {
		if e.Volume == s.volume {
			return e.Error
		}
	}
	return ""
}

func (s *scenario) running(pod string) bool {
	p, err := env.cp.Client.CoreV1().Pods(namespace).Get(s.ctx, pod, metav1.GetOptions{})
	return err == nil && p.Status.Phase == v1.PodRunning
}

func (s *scenario) terminating(pod string) bool {
	p, err := env.cp.Client.CoreV1().Pods(namespace).Get(s.ctx, pod, metav1.GetOptions{})
	return err == nil && p.DeletionTimestamp != nil
}

// event returns the message of the first event with reason on pod.
func (s *scenario) event(pod, reason string) string {
	events, err := env.cp.Client.CoreV1().Events(namespace).List(s.ctx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": pod, "reason": reason}.AsSelector().String()})
	if err != nil || len(events.Items) == 0 {
		return ""
	}
	return events.Items[0].Message
}

// diagnostics describes the scenario's state for a failure message.
func (s *scenario) diagnostics() string {
	var b strings.Builder
	for _, n := range []*nodeagent.Node{s.nodeA, s.nodeB} {
		st, _ := n.State()
		fmt.Fprintf(&b, "%s: alive=%v ready=%v attached=%v state=%+v (log %s)\n", n.Name, n.Alive(), s.ready(n), s.attached(n), st, n.Log())
	}
	if events, err := env.cp.Client.CoreV1().Events(namespace).List(s.ctx, metav1.ListOptions{}); err == nil {
		for _, e := range events.Items {
			if strings.Contains(e.InvolvedObject.Name, s.name+"-"+s.build) {
				fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	fmt.Fprintf(&b, "kube-controller-manager log: %s", s.kcm.Log())
	return b.String()
}

// deleteObjects removes what the scenario created, so that dead nodes do not
// pile up and tip the node lifecycle controller into zone disruption mode.
func (s *scenario) deleteObjects() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := env.cp.Client
	now := metav1.DeleteOptions{GracePeriodSeconds: zeroSeconds()}
	pods, _ := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if pods != nil {
		for _, p := range pods.Items {
			if p.Spec.NodeName == s.nodeA.Name || p.Spec.NodeName == s.nodeB.Name {
				_ = client.CoreV1().Pods(namespace).Delete(ctx, p.Name, now)
			}
		}
	}
	for _, err := range []error{
		client.CoreV1().PersistentVolumeClaims(namespace).Delete(ctx, s.pvc, now),
		client.CoreV1().PersistentVolumes().Delete(ctx, s.pv, now),
		client.CoreV1().Nodes().Delete(ctx, s.nodeA.Name, now),
		client.CoreV1().Nodes().Delete(ctx, s.nodeB.Name, now),
	} {
		if err != nil && !apierrors.IsNotFound(err) {
			s.t.Logf("cleanup: %v", err)
		}
	}
}

// zeroSeconds is a pointer to 0, for tolerations and delete options. (The
// suite also builds against v1.28, whose k8s.io/utils has no ptr package.)
func zeroSeconds() *int64 {
	var zero int64
	return &zero
}
