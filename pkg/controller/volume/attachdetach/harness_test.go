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

// Package attachdetach_test holds behaviour specs for the attach/detach
// controller's reconciler. They drive the upstream reconciler only through
// its exported API (NewReconciler, the desired and actual state caches, the
// operation executor) with the real rbd and iscsi plugins, a fake clientset
// and a node lister, so they compile against stock and patched Kubernetes.
package attachdetach_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	clientcache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/cache"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/statusupdater"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/kubernetes/pkg/volume/iscsi"
	"k8s.io/kubernetes/pkg/volume/rbd"
	volumetesting "k8s.io/kubernetes/pkg/volume/testing"
	"k8s.io/kubernetes/pkg/volume/util/operationexecutor"
	volumetypes "k8s.io/kubernetes/pkg/volume/util/types"
)

const (
	namespace = "sock-shop"
	// The reconciler's loop; detaches of volumes still mounted wait
	// maxWaitForUnmount (then go ahead only on unhealthy nodes).
	loopPeriod        = 5 * time.Millisecond
	maxWaitForUnmount = 50 * time.Millisecond
	// settle is how long a spec waits to be sure something does not happen.
	settle = 300 * time.Millisecond
)

// nodeState is how a node looks to the controller.
type nodeState int

const (
	ready nodeState = iota
	notReady
	unknown
	deleted
	outOfService // Ready, but tainted node.kubernetes.io/out-of-service
)

func node(name string, state nodeState) *v1.Node {
	status := v1.ConditionTrue
	switch state {
	case notReady:
		status = v1.ConditionFalse
	case unknown:
		status = v1.ConditionUnknown
	}
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Status: v1.NodeStatus{
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: status}},
			NodeInfo:   v1.NodeSystemInfo{KubeletVersion: fencingKubelet},
		},
	}
	if state == outOfService {
		n.Spec.Taints = []v1.Taint{{Key: v1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: v1.TaintEffectNoExecute}}
	}
	return n
}

// fencingKubelet is the version a patched kubelet reports: the build
// metadata says it blocklists an image's previous holder before mapping.
const (
	fencingKubelet = "v1.30.14+rbdfailover.5"
	stockKubelet   = "v1.30.14"
)

// withKubelet sets the kubelet version the node reports.
func withKubelet(n *v1.Node, version string) *v1.Node {
	n.Status.NodeInfo.KubeletVersion = version
	return n
}

func rbdPV(modes ...v1.PersistentVolumeAccessMode) *volume.Spec {
	return volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "user-pv"},
		Spec: v1.PersistentVolumeSpec{
			AccessModes: modes,
			PersistentVolumeSource: v1.PersistentVolumeSource{RBD: &v1.RBDPersistentVolumeSource{
				CephMonitors: []string{"10.0.0.1:6789"}, RBDImage: "user-pv", RBDPool: "sock_shop", RadosUser: "kube",
				SecretRef: &v1.SecretReference{Name: "ceph-user-secret", Namespace: namespace},
			}},
		},
	}, false)
}

func rbdInline() *volume.Spec {
	return volume.NewSpecFromVolume(&v1.Volume{Name: "user-vol", VolumeSource: v1.VolumeSource{RBD: &v1.RBDVolumeSource{
		CephMonitors: []string{"10.0.0.1:6789"}, RBDImage: "user-inline", RBDPool: "sock_shop"}}})
}

func iscsiPV() *volume.Spec {
	return volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "iscsi-pv"},
		Spec: v1.PersistentVolumeSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{ISCSI: &v1.ISCSIPersistentVolumeSource{
				TargetPortal: "10.0.0.2:3260", IQN: "iqn.2026-11.io.example:target", Lun: 0}},
		},
	}, false)
}

func pod(name string, n types.NodeName) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: types.UID(name + "-uid")},
		Spec:       v1.PodSpec{NodeName: string(n)},
	}
}

// deleting returns the pod as it looks once it is being deleted, with grace
// left of its grace period: evicted from a node that cannot confirm its
// end, it stays Terminating.
func deleting(p *v1.Pod, grace time.Duration) *v1.Pod {
	p = p.DeepCopy()
	at := metav1.NewTime(time.Now().Add(grace))
	p.DeletionTimestamp = &at
	return p
}

// opTracker wraps the real operation generator and records how many
// operations on one volume run at once; each operation takes a little
// while, so that overlapping ones would be seen.
type opTracker struct {
	operationexecutor.OperationGenerator
	mu       sync.Mutex
	inFlight map[string]int
	maxSeen  int
	ops      []string
}

func (o *opTracker) wrap(kind string, volume string, node types.NodeName, gen volumetypes.GeneratedOperations) volumetypes.GeneratedOperations {
	inner := gen.OperationFunc
	gen.OperationFunc = func() volumetypes.OperationContext {
		o.mu.Lock()
		o.inFlight[volume]++
		if o.inFlight[volume] > o.maxSeen {
			o.maxSeen = o.inFlight[volume]
		}
		o.ops = append(o.ops, kind+" "+string(node))
		o.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		ctx := inner()
		o.mu.Lock()
		o.inFlight[volume]--
		o.mu.Unlock()
		return ctx
	}
	return gen
}

func (o *opTracker) GenerateAttachVolumeFunc(logger klog.Logger, v operationexecutor.VolumeToAttach, asw operationexecutor.ActualStateOfWorldAttacherUpdater) volumetypes.GeneratedOperations {
	return o.wrap("attach", string(v.VolumeName), v.NodeName, o.OperationGenerator.GenerateAttachVolumeFunc(logger, v, asw))
}

func (o *opTracker) GenerateDetachVolumeFunc(logger klog.Logger, v operationexecutor.AttachedVolume, verify bool, asw operationexecutor.ActualStateOfWorldAttacherUpdater) (volumetypes.GeneratedOperations, error) {
	gen, err := o.OperationGenerator.GenerateDetachVolumeFunc(logger, v, verify, asw)
	return o.wrap("detach", string(v.VolumeName), v.NodeName, gen), err
}

// world is a running reconciler with its caches.
type world struct {
	t        *testing.T
	dsw      cache.DesiredStateOfWorld
	asw      cache.ActualStateOfWorld
	recorder *record.FakeRecorder
	seen     []string // events read from recorder
	ops      *opTracker
	cancel   context.CancelFunc
	logger   klog.Logger
}

// newWorld starts the upstream reconciler with the real rbd and iscsi
// plugins and the given nodes in the node lister.
func newWorld(t *testing.T, nodes ...*v1.Node) *world {
	t.Helper()
	client := fake.NewSimpleClientset()
	host := volumetesting.NewFakeAttachDetachVolumeHostWithCSINodeName(t, t.TempDir(), client, nil, "", nil, nil)
	mgr := &volume.VolumePluginMgr{}
	if err := mgr.InitPlugins(append(rbd.ProbeVolumePlugins(), iscsi.ProbeVolumePlugins()...), nil, host); err != nil {
		t.Fatalf("init plugins: %v", err)
	}
	indexer := clientcache.NewIndexer(clientcache.MetaNamespaceKeyFunc, clientcache.Indexers{})
	for _, n := range nodes {
		if err := indexer.Add(n); err != nil {
			t.Fatal(err)
		}
	}
	recorder := record.NewFakeRecorder(1000)
	ops := &opTracker{
		OperationGenerator: operationexecutor.NewOperationGenerator(client, mgr, recorder, volumetesting.NewBlockVolumePathHandler()),
		inFlight:           map[string]int{},
	}
	w := &world{
		t:        t,
		dsw:      cache.NewDesiredStateOfWorld(mgr),
		asw:      cache.NewActualStateOfWorld(mgr),
		recorder: recorder,
		ops:      ops,
	}
	logger, ctx := ktesting.NewTestContext(t)
	w.logger = logger
	ctx, w.cancel = context.WithCancel(ctx)
	t.Cleanup(w.cancel)
	rc := newReconciler(loopPeriod, maxWaitForUnmount, w.dsw, w.asw,
		operationexecutor.NewOperationExecutor(ops), statusupdater.NewFakeNodeStatusUpdater(false),
		corelisters.NewNodeLister(indexer), recorder)
	for _, n := range []types.NodeName{"node-a", "node-b", "node-c"} {
		w.dsw.AddNode(n, false)
	}
	go rc.Run(ctx)
	return w
}

// schedule adds a pod using spec on node n to the desired state.
func (w *world) schedule(p *v1.Pod, spec *volume.Spec, n types.NodeName) v1.UniqueVolumeName {
	w.t.Helper()
	name, err := w.dsw.AddPod(volumetypes.UniquePodName(p.UID), p, spec, n)
	if err != nil {
		w.t.Fatalf("add pod %s: %v", p.Name, err)
	}
	return name
}

// attached records that the volume is attached to n, as after an earlier
// attach.
func (w *world) attached(name v1.UniqueVolumeName, spec *volume.Spec, n types.NodeName) {
	w.t.Helper()
	if err := w.asw.MarkVolumeAsAttached(w.logger, name, spec, n, ""); err != nil {
		w.t.Fatalf("mark attached: %v", err)
	}
}

// nodesOf returns the nodes the volume is attached to.
func (w *world) nodesOf(name v1.UniqueVolumeName) []types.NodeName {
	return w.asw.GetNodesForAttachedVolume(name)
}

// waitFor polls cond until it holds or a deadline passes.
func (w *world) waitFor(what string, cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.t.Errorf("timed out waiting for %s", what)
	return false
}

// events returns every event recorded so far.
func (w *world) events() []string {
	for {
		select {
		case e := <-w.recorder.Events:
			w.seen = append(w.seen, e)
		default:
			return append([]string(nil), w.seen...)
		}
	}
}

func hasEvent(events []string, parts ...string) bool {
	for _, e := range events {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(e, p)
		}
		if all {
			return true
		}
	}
	return false
}

// countEvents counts the events that contain every part.
func countEvents(events []string, parts ...string) int {
	n := 0
	for _, e := range events {
		if hasEvent([]string{e}, parts...) {
			n++
		}
	}
	return n
}

func contains(nodes []types.NodeName, n types.NodeName) bool {
	for _, x := range nodes {
		if x == n {
			return true
		}
	}
	return false
}

// fencedFailoverKnown reports whether the build has the fork's feature gate.
func fencedFailoverKnown() bool {
	_, known := utilfeature.DefaultFeatureGate.DeepCopy().GetAll()["RBDFencedFailover"]
	return known
}

// setFencedFailover turns the fork's feature gate on or off for the test.
// Stock Kubernetes does not know the gate; there it stays "off".
func setFencedFailover(t *testing.T, on bool) {
	t.Helper()
	if !fencedFailoverKnown() {
		return
	}
	prev := utilfeature.DefaultFeatureGate.Enabled("RBDFencedFailover")
	if err := utilfeature.DefaultMutableFeatureGate.Set(fmt.Sprintf("RBDFencedFailover=%v", on)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = utilfeature.DefaultMutableFeatureGate.Set(fmt.Sprintf("RBDFencedFailover=%v", prev)) })
}
