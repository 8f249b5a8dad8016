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
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/calllog"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
)

// monitorInterval is how often the monitor samples.
const monitorInterval = 300 * time.Millisecond

// expectation is what a scenario's verdict (from the call logs) must find.
type expectation int

const (
	// expectNoDouble: never two unfenced read-write mappings of the image
	// at once, in use or not.
	expectNoDouble expectation = iota
	// expectDouble: the row shows the hazard (stock with ReadWriteMany):
	// an interval in which two unfenced mappings were both in use.
	expectDouble
	// expectUnmountedDouble: a second mapping may live beside the holder's
	// for a while but is never in use: node-a frozen between its map and
	// its record, unmapping when it runs again.
	expectUnmountedDouble
)

// monitor samples what a scenario's timeline shows: from the API, the
// nodes' Ready condition, the pods, the attachments and the events; each
// running node's mounts; and, as a second view beside the call logs'
// verdict, the image's watchers (rbd status as the admin) and the
// mappings both nodes hold whose clients are not blocklisted. A sample
// that cannot be read fails the run.
type monitor struct {
	s    *scenario
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu      sync.Mutex
	samples int
	// doubles counts samples with two or more watchers (a second view:
	// the fence's rbd image-meta commands open the image, and so watch it,
	// for some tens of milliseconds), unfenced samples in which two nodes
	// hold mappings whose clients are not blocklisted.
	doubles, unfenced int
	double            string
	// seen are the mappings of the image the monitor saw, unfencedSamples
	// the samples that saw two of them unfenced: crossCheck finds each in
	// the call logs.
	seen            map[seenMapping]time.Time
	unfencedSamples []unfencedSample
	errors          []string
	// last is the last value seen of each followed thing, by key.
	last map[string]string
	// seenEvents are the API events already on the timeline.
	seenEvents map[types.UID]bool
}

func startMonitor(s *scenario) *monitor {
	m := &monitor{s: s, done: make(chan struct{}), last: map[string]string{}, seenEvents: map[types.UID]bool{},
		seen: map[seenMapping]time.Time{}}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.done:
				return
			case <-time.After(monitorInterval):
			}
			m.sample()
		}
	}()
	return m
}

func (m *monitor) stop() {
	m.once.Do(func() { close(m.done) })
	m.wg.Wait()
}

// changed records on lane what key now is ("" for nothing to say), if it
// changed since the last sample.
func (m *monitor) changed(at time.Time, lane, key, now string) {
	m.mu.Lock()
	was := m.last[key]
	m.last[key] = now
	m.mu.Unlock()
	if now != "" && now != was {
		m.s.tl.Add(at, lane, "%s", now)
	}
}

// lastOf is the last value recorded for key.
func (m *monitor) lastOf(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last[key]
}

func (m *monitor) sample() {
	s := m.s
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Each observation is stamped when its read returned: one sample takes
	// a while (rbd status, the nodes' mount tables, the API).
	watchers, err := env.cluster.Watchers(ctx, s.claim)
	now := time.Now()
	m.mu.Lock()
	m.samples++
	if err != nil {
		m.errors = append(m.errors, fmt.Sprintf("%s: %v", now.Format(time.RFC3339Nano), err))
	}
	m.mu.Unlock()
	if err == nil {
		owners := map[uint64]string{}
		for _, n := range []*kubelet.Node{s.nodeA, s.nodeB} {
			for _, mp := range n.Mappings() {
				owners[mp.Client] = s.lane(n)
			}
		}
		var names []string
		for _, w := range watchers {
			who := owners[w.Client]
			if who == "" {
				who = "?"
			}
			names = append(names, fmt.Sprintf("client.%d (%s)", w.Client, who))
		}
		sort.Strings(names)
		state := "no watcher"
		if len(names) > 0 {
			state = "watchers: " + strings.Join(names, ", ")
		}
		m.changed(now, laneCeph, "watchers", state)
		m.mu.Lock()
		if len(watchers) > 1 {
			m.doubles++
			if m.double == "" {
				m.double = fmt.Sprintf("at %s: %s", now.Format(time.RFC3339Nano), state)
			}
		}
		m.mu.Unlock()
	}
	m.sampleMappings(ctx)
	for _, n := range []*kubelet.Node{s.nodeA, s.nodeB} {
		lane := s.lane(n)
		node, err := env.cp.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		now := time.Now()
		if err == nil {
			readyState := "NotReady"
			for _, c := range node.Status.Conditions {
				if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
					readyState = "Ready"
				}
			}
			m.changed(now, laneControl, "ready/"+lane, lane+" "+readyState)
			attachedState := ""
			if strings.HasPrefix(m.lastOf("attached/"+lane), "attached") {
				attachedState = "detached from " + lane
			}
			for _, a := range node.Status.VolumesAttached {
				if a.Name == s.volumeName() {
					attachedState = "attached to " + lane
				}
			}
			m.changed(now, laneControl, "attached/"+lane, attachedState)
		}
		if n.Running() {
			mounts, err := n.Mounts(ctx)
			now := time.Now()
			if err == nil {
				state := ""
				if len(mounts) > 0 {
					state = "mounted " + strings.Fields(mounts[0])[0]
				} else if m.lastOf("mount/"+lane) != "" {
					state = "unmounted"
				}
				m.changed(now, lane, "mount/"+lane, state)
			}
		}
	}
	for _, p := range s.podList() {
		q, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		now := time.Now()
		state := ""
		switch {
		case err != nil:
			state = s.appName(p) + " gone"
		case q.DeletionTimestamp != nil:
			state = s.appName(p) + " Terminating"
		default:
			state = s.appName(p) + " " + string(q.Status.Phase)
		}
		lane := laneControl
		if q != nil && q.Spec.NodeName == s.nodeB.Name {
			lane = laneB
		} else if q != nil && q.Spec.NodeName == s.nodeA.Name {
			lane = laneA
		}
		m.changed(now, lane, "pod/"+p.Name, state)
	}
	m.events(ctx)
}

// routineEvents are what every pod of the fake runtime gets: not drawn.
var routineEvents = map[string]bool{"Scheduled": true, "MissingClusterDNS": true, "Pulled": true, "Created": true, "Started": true}

// events puts the pods' new API events on the timeline: the controller's
// on its lane, the kubelets' on their node's.
func (m *monitor) events(ctx context.Context) {
	s := m.s
	evs, err := env.cp.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, e := range evs.Items {
		var pod *v1.Pod
		for _, p := range s.podList() {
			if p.UID == e.InvolvedObject.UID {
				pod = p
			}
		}
		m.mu.Lock()
		seen := m.seenEvents[e.UID]
		m.seenEvents[e.UID] = true
		m.mu.Unlock()
		if pod == nil || seen || routineEvents[e.Reason] {
			continue
		}
		lane := laneControl
		if e.Source.Component == "kubelet" || e.ReportingController == "kubelet" {
			lane = laneB
			if pod.Spec.NodeName == s.nodeA.Name {
				lane = laneA
			}
		}
		at := e.FirstTimestamp.Time
		if at.IsZero() {
			at = e.EventTime.Time
		}
		if at.IsZero() {
			at = time.Now()
		}
		s.tl.Add(at, lane, "%s %s: %s", s.appName(pod), e.Reason, e.Message)
	}
}

// sampleMappings counts a sample in which two nodes hold a mapping of the
// image whose client is not blocklisted.
func (m *monitor) sampleMappings(ctx context.Context) {
	s := m.s
	var mapped []string
	seenAt := time.Now()
	for _, n := range []*kubelet.Node{s.nodeA, s.nodeB} {
		for _, mp := range n.Mappings() {
			if mp.Image == s.claim {
				mapped = append(mapped, mp.Address)
				m.mu.Lock()
				m.seen[seenMapping{lane: s.lane(n), client: mp.Client}] = seenAt
				m.mu.Unlock()
			}
		}
	}
	if len(mapped) < 2 {
		return
	}
	fenced, err := env.cluster.BlocklistedAddresses(ctx)
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errors = append(m.errors, fmt.Sprintf("%s: %v", now.Format(time.RFC3339Nano), err))
		return
	}
	var live []string
	for _, addr := range mapped {
		if addr == "" || !fenced[addr] {
			live = append(live, addr)
		}
	}
	if len(live) > 1 {
		m.unfenced++
		m.unfencedSamples = append(m.unfencedSamples, unfencedSample{at: now, addresses: live})
		if m.unfenced == 1 {
			s.tl.Add(now, laneCeph, "two unfenced mappings (sampled)")
		}
	}
}

// seenMapping is a mapping of the image the monitor saw on a node.
type seenMapping struct {
	lane   string
	client uint64
}

// unfencedSample is a sample that saw two or more mappings of the image
// whose clients were not blocklisted.
type unfencedSample struct {
	at        time.Time
	addresses []string
}

// crossCheckSlack is how far a sample's time may lie from the interval
// the logs give: a sample reads the mappings, then the blocklist.
const crossCheckSlack = 5 * time.Second

// crossCheck holds the sampled view against the call logs' accounting:
// a sample that saw two nodes holding unfenced mappings of the image must
// fall where the logs found two unfenced mappings too, or the logs missed
// something. Samples that could not be read fail the run.
func (m *monitor) crossCheck(acc calllog.Accounting) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.s.t
	// Every mapping the monitor saw is in the logs.
	for seen := range m.seen {
		found := false
		for _, mp := range acc.Mappings {
			found = found || (mp.Node == seen.lane && mp.Client == seen.client)
		}
		if !found {
			t.Errorf("the monitor saw %s's mapping of %s (client.%d); the call logs have none", seen.lane, m.s.claim, seen.client)
		}
	}
	// Every sample with two unfenced mappings falls in an interval in which
	// the logs have those two mappings unfenced.
	for _, sample := range m.unfencedSamples {
		found := false
		for _, o := range acc.Overlaps {
			if imageName(o.Image) == m.s.claim && contains(sample.addresses, o.A.Address) && contains(sample.addresses, o.B.Address) &&
				!o.From.After(sample.at.Add(crossCheckSlack)) && !o.To.Before(sample.at.Add(-crossCheckSlack)) {
				found = true
			}
		}
		if !found {
			t.Errorf("a sample at %s saw unfenced mappings of %s by %q; the call logs have no such interval near it",
				sample.at.Format(time.RFC3339Nano), m.s.claim, sample.addresses)
		}
	}
	if len(m.errors) > 0 {
		t.Errorf("the safety monitor could not read the image's watchers %d of %d times; first: %s", len(m.errors), m.samples, m.errors[0])
	}
	if m.samples < minSamples {
		t.Errorf("the safety monitor took only %d samples", m.samples)
	}
}

// minSamples is the fewest samples a run's second view may rest on.
const minSamples = 5

// waitSamples waits, up to timeout, until the monitor has taken n samples:
// on a busy machine a short scenario can end before it has.
func (m *monitor) waitSamples(n int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		m.mu.Lock()
		got := m.samples
		m.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			return
		}
		time.Sleep(monitorInterval)
	}
}

// contains reports whether list has s.
func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
