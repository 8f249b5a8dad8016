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

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/calllog"
)

// TestMapRecordKill (patched): node-a's kubelet is killed, with
// the call it has under way (as a service manager stops its cgroup), after
// its map and before its holder record. While another client watches the
// image, the restarted kubelet finds the mapping its predecessor made and
// must not hand it out: its record-then-verify fails, it unmaps, nothing
// is mounted, and its record goes with the mapping. Once that client has
// gone, it maps again (blocklisting nobody), and the device is used only
// after a record and a verify that both exited 0.
func TestMapRecordKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout()+5*time.Minute)
	defer cancel()
	s := newScenario(ctx, t, "map-record-kill", variant{build: patched})
	defer drawTimelines(t, "map-record-kill", s)
	nodeA := s.nodeA

	if err := nodeA.HoldRecord(); err != nil {
		t.Fatal(err)
	}
	podA := s.createPod(nodeA)
	poll(ctx, t, "node-a's record write held in the shim", failoverTimeout(), func(context.Context) (bool, error) {
		return nodeA.RecordHeld(), nil
	})
	mappings := nodeA.Mappings()
	if len(mappings) != 1 {
		t.Fatalf("node-a has %d mappings at its record, want 1", len(mappings))
	}
	first := mappings[0]
	if records := s.holderRecords(); len(records) != 0 {
		t.Fatalf("holder records %q before node-a's record was written: the kill would come too late", records)
	}

	// Another client on the image: the restarted kubelet's verify must see it.
	other, err := env.cluster.Hold(s.claim)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	s.tl.SetStart(time.Now())
	s.tl.Mark(laneCeph, "another client (client.%d) opens the image", other.Client)

	s.tl.Mark(laneA, "kubelet killed with its held record write, started again")
	restarted, err := nodeA.RestartKubeletKillingHeldCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msg string
	poll(ctx, t, "a FailedMount from the restarted kubelet", failoverTimeout(), func(context.Context) (bool, error) {
		msg = s.eventSince(podA, "FailedMount", restarted)
		return msg != "", nil
	})
	poll(ctx, t, "node-a's first mapping gone", failoverTimeout(), func(context.Context) (bool, error) {
		for _, m := range nodeA.Mappings() {
			if m.Client == first.Client {
				return false, nil
			}
		}
		return true, nil
	})
	s.tl.Mark(laneA, "its first mapping is gone")
	if !strings.Contains(msg, fmt.Sprintf("client.%d", other.Client)) && !strings.Contains(msg, other.Address) {
		t.Errorf("the restarted kubelet's FailedMount %q does not name the other client (client.%d %s)", msg, other.Client, other.Address)
	}
	if p, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, podA.Name, metav1.GetOptions{}); err != nil || p.Status.Phase == v1.PodRunning {
		t.Errorf("app-1 runs (%v) while another client watched the image", err)
	}

	s.tl.Mark(laneCeph, "the other client closes the image")
	other.Close()
	running := s.waitRunning(podA, failoverTimeout())
	s.writeRecords(nodeA, podA, 1)

	// From node-a's call log: the first mapping never used; the device in
	// use came from a map after the restart, and its first use started
	// after a record and then a verify of its own, both exited 0.
	acc := s.account()
	var used *calllog.Mapping
	for i, m := range acc.Mappings {
		if m.Client == first.Client && !m.InUse.IsZero() {
			t.Errorf("the mapping made before the kill (%s) was handed out at %s", m, m.InUse.Format(time.RFC3339Nano))
		}
		if m.Client != first.Client && !m.InUse.IsZero() && used == nil {
			used = &acc.Mappings[i]
		}
	}
	if used == nil {
		t.Fatalf("no mapping of node-a's was used after the other client closed the image: %v", acc.Mappings)
	}
	if !used.Begin.After(restarted) {
		t.Errorf("the mapping in use (%s) was made before the restart", used)
	}
	var recorded, verified time.Time
	for _, c := range acc.Calls {
		if c.Node != laneA || !c.Ended || c.Status != 0 || c.Start.At.Before(used.Begin) || !c.End.Before(used.InUse) {
			continue
		}
		switch {
		case isCall(c.Name(), "rbd image-meta set") && recorded.IsZero():
			recorded = c.End
		case isCall(c.Name(), "rbd status") && !recorded.IsZero() && c.Start.At.After(recorded):
			verified = c.End
		}
	}
	if recorded.IsZero() || verified.IsZero() {
		t.Errorf("node-a used %s at %s without a record (%v) and then a verify (%v) that exited 0 before it", used.Device,
			used.InUse.Format(time.RFC3339Nano), recorded, verified)
	}
	// Its failed reclaim removed the record of the mapping it unmapped:
	// nothing blocklists that dead client (for 30 days), nor anyone else.
	for _, f := range acc.Fences {
		t.Errorf("%s blocklisted %s at %s (the first mapping's client is %s): its record outlived the unmap", f.Node, f.Address,
			f.End.Format(time.RFC3339Nano), first.Address)
	}
	if records := s.holderRecords(); len(records) != 1 || !strings.Contains(records[0], `"`+used.Address+`"`) {
		t.Errorf("holder records %q, want the mapping in use's alone (%s)", records, used.Address)
	}
	s.note("the restarted kubelet's FailedMount while the other client watched: %s", msg)
	s.outcome = fmt.Sprintf("the restarted kubelet did not hand out the mapping its predecessor made (its verify saw client.%d) and unmapped it; "+
		"app-1 Running %v after the restart, on a new mapping used only after its record and verify", other.Client,
		running.Sub(restarted).Round(100*time.Millisecond))
	s.finish(expectNoDouble)
}
