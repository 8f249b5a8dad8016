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
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	clientcache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/cache"
	"k8s.io/kubernetes/pkg/controller/volume/attachdetach/statusupdater"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/kubernetes/pkg/volume/rbd"
	volumetesting "k8s.io/kubernetes/pkg/volume/testing"
	"k8s.io/kubernetes/pkg/volume/util/operationexecutor"
	volumetypes "k8s.io/kubernetes/pkg/volume/util/types"
)

const (
	benchNodes   = 1000
	benchVolumes = 10000
	// One volume in benchWantedEvery is also wanted by a pod on another node
	// (10 %); the holders of half of those are NotReady.
	benchWantedEvery = 10
)

// passCounter counts reconcile passes: the reconciler updates node statuses
// once at the end of every pass. It signals when a target count is reached,
// so the benchmark waits without polling.
type passCounter struct {
	statusupdater.NodeStatusUpdater
	mu     sync.Mutex
	passes int64
	target int64
	done   chan struct{}
}

func (p *passCounter) UpdateNodeStatuses(logger klog.Logger) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.passes++
	if p.done != nil && p.passes >= p.target {
		close(p.done)
		p.done = nil
	}
	return nil
}

// waitFor blocks until n more passes than now have run, and returns the count
// at the start.
func (p *passCounter) waitFor(b *testing.B, n int64, start func()) {
	p.mu.Lock()
	done := make(chan struct{})
	p.target, p.done = p.passes+n, done
	p.mu.Unlock()
	if start != nil {
		start()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("fewer than %d reconcile passes in 10 minutes", n)
	}
}

func benchRBDPV(i int) *volume.Spec {
	return volume.NewSpecFromPersistentVolume(&v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pv-%05d", i)},
		Spec: v1.PersistentVolumeSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{RBD: &v1.RBDPersistentVolumeSource{
				CephMonitors: []string{"10.0.0.1:6789"}, RBDImage: fmt.Sprintf("img-%05d", i), RBDPool: "rbd"}},
		},
	}, false)
}

// BenchmarkReconcilePass measures one pass of the attach/detach reconciler
// (attach, then detach, then node status) over 1,000 nodes and 10,000
// attached RBD RWO volumes, 10 % of them also wanted by a pod on another
// node, half of whose holders are NotReady. Those start attached to the new
// node too, as after a failover (stock cannot reach that state by itself,
// and a bigger world would be measured, not the check); the other half, with
// Ready holders, get the Multi-Attach error in both builds, and the patched
// reconciler checks their holders' health on every pass. Run it against
// stock and patched trees (hack/bench.sh) and compare with benchstat.
func BenchmarkReconcilePass(b *testing.B) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	klog.SetOutput(io.Discard)
	defer klog.SetOutput(nil)

	client := fake.NewSimpleClientset()
	// The fake host wants a *testing.T only to report errors, which it has none of here.
	host := volumetesting.NewFakeAttachDetachVolumeHostWithCSINodeName(&testing.T{}, b.TempDir(), client, nil, "", nil, nil)
	mgr := &volume.VolumePluginMgr{}
	if err := mgr.InitPlugins(rbd.ProbeVolumePlugins(), nil, host); err != nil {
		b.Fatal(err)
	}
	indexer := clientcache.NewIndexer(clientcache.MetaNamespaceKeyFunc, clientcache.Indexers{})
	dsw := cache.NewDesiredStateOfWorld(mgr)
	asw := cache.NewActualStateOfWorld(mgr)
	logger := klog.Background()
	nodeName := func(i int) types.NodeName { return types.NodeName(fmt.Sprintf("node-%04d", i%benchNodes)) }
	for i := 0; i < benchNodes; i++ {
		// Holders of the wanted volumes below are even nodes; half of
		// those (every other even node) are NotReady.
		state := ready
		if i%4 == 0 {
			state = notReady
		}
		if err := indexer.Add(node(string(nodeName(i)), state)); err != nil {
			b.Fatal(err)
		}
		dsw.AddNode(nodeName(i), false)
	}
	for i := 0; i < benchVolumes; i++ {
		spec := benchRBDPV(i)
		holder := nodeName(i)
		p := pod(fmt.Sprintf("pod-%05d", i), holder)
		name, err := dsw.AddPod(volumetypes.UniquePodName(p.UID), p, spec, holder)
		if err != nil {
			b.Fatal(err)
		}
		if err := asw.MarkVolumeAsAttached(logger, name, spec, holder, ""); err != nil {
			b.Fatal(err)
		}
		if i%benchWantedEvery == 0 {
			// i is a multiple of 10, so holder i%1000 is even; the pod
			// wanting the volume is on the next node.
			q := pod(fmt.Sprintf("new-%05d", i), nodeName(i+1))
			if _, err := dsw.AddPod(volumetypes.UniquePodName(q.UID), q, benchRBDPV(i), nodeName(i+1)); err != nil {
				b.Fatal(err)
			}
			// A volume whose holder is NotReady starts as after a failover
			// (attached to both nodes), so that stock and patched
			// reconcile the same world and the difference is the check.
			if i%4 == 0 {
				if err := asw.MarkVolumeAsAttached(logger, name, spec, nodeName(i+1), ""); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	recorder := &record.FakeRecorder{} // drops events
	counter := &passCounter{NodeStatusUpdater: statusupdater.NewFakeNodeStatusUpdater(false)}
	ex := operationexecutor.NewOperationExecutor(operationexecutor.NewOperationGenerator(
		client, mgr, recorder, volumetesting.NewBlockVolumePathHandler()))
	rc := newReconciler(0, time.Hour, dsw, asw, ex, counter, corelisters.NewNodeLister(indexer), recorder)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logger))
	defer cancel()
	go rc.Run(ctx)

	// Warm up: the first passes report Multi-Attach errors (and, patched,
	// start the failover attaches); measure the steady state.
	counter.waitFor(b, 20, nil)
	counter.waitFor(b, int64(b.N), b.ResetTimer)
	b.StopTimer()
}
