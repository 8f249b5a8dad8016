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
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/controlplane"
)

// row is one scenario against one build in the report.
type row struct {
	scenario, build string
	outcome         string
	// powerOffToNotReady: from the power cut (or partition) to the Node's
	// Ready condition leaving True.
	powerOffToNotReady time.Duration
	// boundToAttach: from the replacement pod being bound to its node to
	// the controller listing the volume in that node's volumesAttached.
	boundToAttach time.Duration
	// watchExpiryToMap: from the later of the old mapping's watch leaving
	// the image and the attach to the new node, to the new node's map.
	watchExpiryToMap time.Duration
	doubles, samples int
	// staleAttempted and staleLanded count the writes node-a's application
	// made after node-a woke up from a freeze, and those that landed.
	staleAttempted, staleLanded int
	notes                       []string
}

func (r *row) note(format string, args ...interface{}) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// report collects rows and writes them as Markdown.
type report struct {
	path   string
	mu     sync.Mutex
	head   []string
	rows   []*row
	titles map[string]string
}

var scenarioTitles = map[string]string{
	"a": "node-a powered off",
	"b": "split brain: node-a partitioned, Ceph kept",
	"c": "healthy race: second pod on node-b",
	"d": "(a) with kube-controller-manager restarted",
	"e": "(a) with the PV marked ReadWriteMany",
	"f": "node-a frozen past its watch timeout, then woken up (stock: PV ReadWriteMany)",
	"g": "node-a NotReady for a while, pod not evicted; second pod on node-b",
}

func newReport(path string) *report { return &report{path: path} }

func (r *report) header(cephVersion, kubeVersion string, watchTimeout, cephReady, cpReady time.Duration) {
	r.head = append(r.head,
		"# Node failure end to end (real Ceph, real control plane, simulated nodes)",
		"",
		fmt.Sprintf("- Ceph %s (1 mon, 1 memstore OSD, 127.0.0.1), osd_client_watch_timeout %v; started in %v",
			cephVersion, watchTimeout, cephReady.Round(100*time.Millisecond)),
		fmt.Sprintf("- etcd and kube-apiserver %s started in %v; kube-controller-manager: node-monitor-grace-period %v, "+
			"controllers attachdetach, nodelifecycle, taint-eviction-controller, podgc", kubeVersion, cpReady.Round(100*time.Millisecond),
			controlplane.NodeMonitorGracePeriod),
		"- nodes: test/e2e/cmd/rbd-node-agent (heartbeat 1 s; the RBD plugin's WaitForAttach of the row's build; the real rbd map, then a librbd client as the mapping, writing a record every 200 ms as the pod's application)",
		"")
}

func (r *report) row(scenario, build string) *row {
	r.mu.Lock()
	defer r.mu.Unlock()
	x := &row{scenario: scenario, build: build, outcome: "did not finish (see the test log)"}
	r.rows = append(r.rows, x)
	return x
}

func dur(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return d.Round(100 * time.Millisecond).String()
}

func (r *report) write() {
	r.mu.Lock()
	defer r.mu.Unlock()
	sort.SliceStable(r.rows, func(i, j int) bool { return r.rows[i].scenario < r.rows[j].scenario })
	var b strings.Builder
	for _, l := range r.head {
		b.WriteString(l + "\n")
	}
	b.WriteString("| scenario | build | outcome | power-off → NotReady | replacement bound → attach | old watch gone (or attach, if later) → new map | double mappings (samples) | stale writes landed (attempted) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.rows {
		stale := "–"
		if x.staleAttempted > 0 {
			stale = fmt.Sprintf("%d (%d)", x.staleLanded, x.staleAttempted)
		}
		fmt.Fprintf(&b, "| %s: %s | %s | %s | %s | %s | %s | %d (%d) | %s |\n", x.scenario, scenarioTitles[x.scenario], x.build,
			x.outcome, dur(x.powerOffToNotReady), dur(x.boundToAttach), dur(x.watchExpiryToMap), x.doubles, x.samples, stale)
	}
	b.WriteString("\n")
	for _, x := range r.rows {
		for _, n := range x.notes {
			fmt.Fprintf(&b, "- %s/%s: %s\n", x.scenario, x.build, n)
		}
	}
	fmt.Print(b.String())
	_ = os.WriteFile(r.path, []byte(b.String()), 0o644)
}
