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

// tolerateForever keeps a pod on a node that is unreachable or not ready
// for good (no tolerationSeconds): it is never evicted.
func tolerateForever(p *v1.Pod) {
	p.Spec.Tolerations = []v1.Toleration{
		{Key: v1.TaintNodeUnreachable, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute},
		{Key: v1.TaintNodeNotReady, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute},
	}
}

// liveWriteBound is how long node-a's write to the volume it kept may
// take once its client watches that image again: generous, since the
// write must land, and a hang past it fails the scenario.
const liveWriteBound = 2 * time.Minute

// TestTwoVolumes: node-a runs app-1 with volume X (evicted when
// node-a is unreachable) and app-2 with volume Y (it tolerates an
// unreachable node for good, so it stays on node-a).
//
// Patched: node-a, running, is cut off from the API server and Ceph, its
// Ceph clients alive; X fails over to node-b, whose kubelet fences X's
// client before it maps. The patched kubelet maps each read-write image as
// a Ceph client of its own (krbd's noshare), so the fence takes X's
// mapping alone: once node-a is reconnected, Y's client is not
// blocklisted, watches Y again, and node-a's write to Y lands on the
// image.
//
// Stock (the control): the stock kubelet maps without noshare, so krbd
// (and the shim, which models its client sharing) maps X and Y through one
// Ceph client. A fence aimed at X, made by hand here since stock never
// fences, takes Y with it: node-a's write to Y fails. This is what noshare
// is for, shown on the model the patched rows run on.
func TestTwoVolumes(t *testing.T) {
	eachVariant(t, "two-volumes", []variant{{build: stock}, {build: patched}}, func(s *scenario) {
		t, ctx, nodeA, nodeB := s.t, s.ctx, s.nodeA, s.nodeB
		claimY := createVolume(ctx, t, s.claim+"-y", v1.ReadWriteOnce)
		podX := s.createPod(nodeA, evictionToleration())
		podY := s.createPodOf(claimY, nodeA, tolerateForever)
		s.waitRunning(podX, podRunningTimeout)
		waitPodRunning(ctx, t, podY, podRunningTimeout)
		const synced = 10
		s.writeRecords(nodeA, podX, synced)
		volY := podMountedVolume(ctx, t, nodeA, podY, claimY)
		markerY := s.writeMarkerOn(nodeA, volY, claimY)

		// Preconditions: one mapping of each image on node-a, each its own
		// client, each the one watcher of its image.
		var mapX, mapY kubelet.Mapping
		mappings := nodeA.Mappings()
		for _, mp := range mappings {
			switch mp.Image {
			case s.claim:
				mapX = mp
			case claimY:
				mapY = mp
			}
		}
		if len(mappings) != 2 || mapX.Client == 0 || mapY.Client == 0 {
			t.Fatalf("node-a's mappings %v: want one of %s and one of %s", mappings, s.claim, claimY)
		}
		if s.build == stock {
			s.sharedClientFence(mapX, mapY, claimY, volY, markerY)
			return
		}
		if mapX.Address == mapY.Address {
			t.Fatalf("node-a maps %s and %s through one client (%s): a fence of one would take both", s.claim, claimY, mapX.Address)
		}
		for image, mp := range map[string]kubelet.Mapping{s.claim: mapX, claimY: mapY} {
			w, err := env.cluster.Watchers(ctx, image)
			if err != nil || len(w) != 1 || w[0].Address != mp.Address {
				t.Fatalf("watchers of %s before the cut: %v (%v); want node-a's client %s alone", image, w, err, mp.Address)
			}
		}
		clients := nodeA.FusePids()
		if len(clients) != 2 {
			t.Fatalf("node-a's Ceph client processes: %v, want two", clients)
		}

		cut := s.cutOff(nodeA, "cut off from the API server and Ceph", env.hub.APIServerIP, env.hub.CephIP)
		poll(ctx, t, "node-a not Ready", failoverTimeout(), notReady(nodeA))
		s.waitEvicted(podX)
		podB := s.createPod(nodeB, evictionToleration())
		running := s.waitRunning(podB, failoverTimeout())
		s.expectEveryRecord(nodeB, podB, synced)
		if fenced, err := env.cluster.Blocklisted(ctx, mapX.Address); err != nil || !fenced {
			t.Errorf("node-a's client of %s (%s) is not blocklisted after node-b mapped it (%v)", s.claim, mapX.Address, err)
		}
		s.checkFencedBeforeMap(nodeB, mapX.Address)
		if p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podY.Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
			t.Fatalf("app-2 (volume %s) was evicted or cannot be read (%v): the scenario wants it kept on node-a", claimY, err)
		}

		back := s.reconnect(nodeA, "reconnected", env.hub.APIServerIP, env.hub.CephIP)
		// Y's client lost its watch while cut off; not fenced, it watches
		// again once it reaches the OSDs.
		rewatched := poll(ctx, t, "node-a's client of "+claimY+" watching it again", failoverTimeout(),
			func(ctx context.Context) (bool, error) {
				w, err := env.cluster.Watchers(ctx, claimY)
				return err == nil && len(w) == 1 && w[0].Address == mapY.Address, nil
			})
		s.tl.Mark(laneCeph, "node-a's client of the second volume watches it again")
		if fenced, err := env.cluster.Blocklisted(ctx, mapY.Address); err != nil || fenced {
			t.Errorf("node-a's client of %s (%s) is blocklisted (%v): the fence of %s took it too", claimY, mapY.Address, err, s.claim)
		}
		// Through the node's namespace, not clients[0]: X's client exits
		// once node-a's kubelet unmaps X, which it may do by now.
		w := s.overwriteMarker(nodeA.MountNSPid(), volY, 'Y', liveWriteBound)
		s.tl.Mark(laneA, "write to the second volume: %s", w)
		switch {
		case w.hung:
			t.Errorf("node-a's write to %s hung past %v: its client should be alive", claimY, liveWriteBound)
		case w.err != nil:
			t.Errorf("node-a's write to %s failed: %s", claimY, w)
		}
		landed := string(imageBytes(ctx, t, claimY, markerY, 4096)) == strings.Repeat("Y", 4096)
		if !landed {
			t.Errorf("node-a's write to %s is not on the image", claimY)
		}
		meta, err := env.cluster.ImageMeta(ctx, claimY)
		if err != nil {
			t.Fatal(err)
		}
		if holderCount(meta) != 1 || !holderNamed(meta, mapY.Address) {
			t.Errorf("holder records of %s: %v; want node-a's client %s alone", claimY, meta, mapY.Address)
		}

		poll(ctx, t, "app-1 gone and node-a left with the mapping of "+claimY, podGoneTimeout, func(ctx context.Context) (bool, error) {
			_, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podX.Name, metav1.GetOptions{})
			mps := nodeA.Mappings()
			return apierrors.IsNotFound(err) && len(mps) == 1 && mps[0].Image == claimY, nil
		})
		acc := s.account()
		for _, f := range acc.Fences {
			if f.Address == mapY.Address {
				t.Errorf("%s blocklisted node-a's client of %s at %s", f.Node, claimY, f.End.Format(time.RFC3339Nano))
			}
		}
		s.note("node-a's clients: %s for %s, %s for %s; X's blocklisted, Y's not; Y watched again %v after the reconnect",
			mapX.Address, s.claim, mapY.Address, claimY, rewatched.Sub(back).Round(100*time.Millisecond))
		s.note("node-a's write to the second volume after the fence: %s, on the image: %v; its holder record is node-a's still", w, landed)
		s.outcome = fmt.Sprintf("failed over: app-3 Running on node-b %v after the cut, node-a's client of the first volume fenced before node-b's map; "+
			"node-a kept the second volume, its client not blocklisted, and its write there landed", running.Sub(cut).Round(100*time.Millisecond))
		s.finish(expectNoDouble)
	})
}

// sharedClientFence is the stock run of TestTwoVolumes: X and Y mapped
// through one client, a fence aimed at X takes Y too.
func (s *scenario) sharedClientFence(mapX, mapY kubelet.Mapping, claimY, volY string, markerY int64) {
	t, ctx, nodeA := s.t, s.ctx, s.nodeA
	if mapX.Address != mapY.Address || mapX.Client != mapY.Client {
		t.Fatalf("the stock kubelet (no noshare) maps %s through client %s and %s through %s: want one shared client, as krbd's",
			s.claim, mapX.Address, claimY, mapY.Address)
	}
	for _, image := range []string{s.claim, claimY} {
		w, err := env.cluster.Watchers(ctx, image)
		if err != nil || len(w) != 1 || w[0].Address != mapX.Address {
			t.Fatalf("watchers of %s: %v (%v); want node-a's shared client %s alone", image, w, err, mapX.Address)
		}
	}
	clients := nodeA.FusePids()
	if len(clients) != 1 {
		t.Fatalf("node-a's Ceph client processes: %v, want one", clients)
	}
	start := time.Now()
	s.tl.SetStart(start)
	s.tl.Mark(laneCeph, "client %s (of %s and %s) blocklisted by hand, aimed at %s", mapX.Address, s.claim, claimY, s.claim)
	if err := env.cluster.Blocklist(ctx, mapX.Address); err != nil {
		t.Fatal(err)
	}
	w := s.overwriteMarker(clients[0], volY, 'Y', liveWriteBound)
	s.tl.Mark(laneA, "write to the second volume: %s", w)
	switch {
	case w.hung:
		t.Errorf("node-a's write to %s hung past %v: a blocklisted client's write must fail", claimY, liveWriteBound)
	case w.err == nil:
		t.Errorf("node-a's write to %s was acknowledged though the client it goes through is blocklisted", claimY)
	case !strings.Contains(string(w.out), "Input/output error"):
		t.Errorf("node-a's write to %s failed, but not with an I/O error: %s", claimY, w)
	}
	landed := string(imageBytes(ctx, t, claimY, markerY, 4096)) == strings.Repeat("Y", 4096)
	if landed {
		t.Errorf("node-a's write to %s is on the image though its client is blocklisted", claimY)
	}
	s.note("node-a's one client %s maps %s and %s (no noshare)", mapX.Address, s.claim, claimY)
	s.note("node-a's write to the second volume after a fence aimed at the first: %s, on the image: %v", w, landed)
	s.outcome = "one Ceph client for both volumes (the stock kubelet maps without noshare): a fence aimed at the first " +
		"took the second, node-a's write to it failed"
	s.finish(expectNoDouble)
}
