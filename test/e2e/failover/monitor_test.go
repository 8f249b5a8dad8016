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
	"fmt"
	"sync"
	"time"
)

// monitor is the safety verdict of a scenario. About every 250 ms it reads
// the image's watchers itself (rbd status as the admin): two watchers on the
// image at once is a double mapping, whichever node claims them — every
// mapping in these scenarios is read-write. A sample that cannot be read
// fails the run: a blind monitor proves nothing.
type monitor struct {
	s    *scenario
	done chan struct{}
	wg   sync.WaitGroup

	mu             sync.Mutex
	samples        int
	doubles        int
	doubleDetail   string
	oldWatchGoneAt time.Time
	oldWatchSeen   bool
	oldClient      uint64
	errors         []string
	// harness are the harness's own clients (reading the image back).
	harness map[uint64]bool
}

func startMonitor(s *scenario) *monitor {
	m := &monitor{s: s, done: make(chan struct{})}
	if old := s.mapping(s.nodeA); old != nil {
		m.oldClient = old.Client
	}
	m.wg.Add(1)
	go m.run()
	return m
}

func (m *monitor) run() {
	defer m.wg.Done()
	for {
		select {
		case <-m.done:
			return
		default:
		}
		m.sample()
		time.Sleep(150 * time.Millisecond)
	}
}

func (m *monitor) sample() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watchers, err := env.cluster.Watchers(ctx, m.s.image)
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples++
	if err != nil {
		m.errors = append(m.errors, fmt.Sprintf("%s: %v", now.Format(time.RFC3339Nano), err))
		return
	}
	watching := map[uint64]bool{}
	for _, w := range watchers {
		if !m.harness[w.Client] {
			watching[w.Client] = true
		}
	}
	if m.oldClient != 0 && watching[m.oldClient] {
		m.oldWatchSeen = true
	}
	if m.oldWatchSeen && !watching[m.oldClient] && m.oldWatchGoneAt.IsZero() {
		m.oldWatchGoneAt = now
	}
	if len(watching) > 1 {
		m.doubles++
		if m.doubleDetail == "" {
			m.doubleDetail = fmt.Sprintf("at %s: watchers %+v", now.Format(time.RFC3339Nano), watchers)
		}
	}
}

func (m *monitor) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	close(m.done)
	m.wg.Wait()
}

// finish keeps sampling until two watch timeouts after node-b mapped (a
// fenced or expired client that came back would show by then), stops,
// records the counts and fails on a double mapping or a failed sample.
func (m *monitor) finish() { m.end(false) }

// finishExpectingDoubles is finish for a row that shows the hazard (stock
// with the ReadWriteMany workaround): double mappings are recorded, not
// failed.
func (m *monitor) finishExpectingDoubles() { m.end(true) }

func (m *monitor) end(expectDoubles bool) {
	if mp := m.s.mapping(m.s.nodeB); mp != nil {
		if rest := 2*env.watchTimeout - time.Since(mp.Since); rest > 0 {
			time.Sleep(rest)
		}
	}
	m.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.s.row.doubles = m.doubles
	m.s.row.samples = m.samples
	if m.doubles > 0 && !expectDoubles {
		m.s.t.Errorf("double mapping: %d sample(s) saw two watchers on %s; first %s", m.doubles, m.s.image, m.doubleDetail)
	}
	if len(m.errors) > 0 {
		m.s.t.Errorf("the safety monitor could not read the image's watchers %d of %d times; first: %s", len(m.errors), m.samples, m.errors[0])
	}
	if m.samples < 5 {
		m.s.t.Errorf("the safety monitor took only %d samples", m.samples)
	}
}

// watchUntil waits while the monitor samples, until deadline or, with
// untilDouble, until it has seen a double mapping.
func (m *monitor) watchUntil(deadline time.Time, untilDouble bool) {
	for time.Now().Before(deadline) {
		m.mu.Lock()
		doubles := m.doubles
		m.mu.Unlock()
		if untilDouble && doubles > 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ignore leaves the harness's own client out of the verdict.
func (m *monitor) ignore(client uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.harness == nil {
		m.harness = map[uint64]bool{}
	}
	m.harness[client] = true
}

func (m *monitor) sawOldWatch() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.oldWatchSeen
}

func (m *monitor) watchGone() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.oldWatchGoneAt
}
