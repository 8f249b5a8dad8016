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

package calllog

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// log builds a node's entries.
type log struct {
	entries []Entry
	pid     int
}

func (l *log) call(start, end int, status int, e Entry) *log {
	l.pid++
	e.At, e.Pid, e.Kind = at(start), l.pid, Start
	l.entries = append(l.entries, e)
	if end >= 0 {
		l.entries = append(l.entries, Entry{At: at(end), Pid: l.pid, Kind: End, Status: status})
	}
	return l
}

// mapped is a map call from start to end that made dev for client.
func (l *log) mapped(start, end int, dev string, client uint64) *log {
	return l.mappedImage(start, end, dev, "rbd/img", client)
}

// mappedImage is mapped for another image than rbd/img.
func (l *log) mappedImage(start, end int, dev, image string, client uint64) *log {
	l.call(start, end, 0, Entry{Tool: "rbd", Verbs: "map", Image: image, Options: "noshare"})
	l.entries = append(l.entries, Entry{At: at(end - 1), Pid: l.pid, Kind: Mapped, Device: dev, Image: image, Client: client,
		Address: addr(client)})
	return l
}

func (l *log) unmapped(start, end int, dev string, client uint64) *log {
	l.call(start, -1, 0, Entry{Tool: "rbd", Verbs: "unmap", Device: dev})
	pid := l.pid
	l.entries = append(l.entries, Entry{At: at(end - 1), Kind: Unmapped, Device: dev, Image: "rbd/img", Client: client, Address: addr(client)},
		Entry{At: at(end), Pid: pid, Kind: End})
	return l
}

func (l *log) mount(start int, dev string) *log {
	return l.call(start, start+10, 0, Entry{Tool: "mount", Device: dev, Target: "/mnt"})
}

func (l *log) blocklist(start, end, status int, client uint64) *log {
	return l.call(start, end, status, Entry{Tool: "ceph", Verbs: "osd blocklist add", Address: addr(client)})
}

func addr(client uint64) string { return "10.0.0.1:0/" + time.Duration(client).String() }

func TestAccount(t *testing.T) {
	end := at(100000)
	for _, tc := range []struct {
		name           string
		a, b           *log
		wantViolations []string // "from-to" in ms
		wantMapped     int      // overlaps that are not in use
		wantFences     int
		wantErrors     int
	}{
		{
			name:           "stock ReadWriteMany: both mounted, nobody fenced",
			a:              (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b:              (&log{}).mapped(5000, 5100, "/dev/rbd1", 2).mount(5200, "/dev/rbd1"),
			wantViolations: []string{"5200-100000"},
			wantMapped:     1,
		},
		{
			name:       "patched failover: the blocklist ended before node-b's map started",
			a:          (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b:          (&log{}).blocklist(4000, 4500, 0, 1).mapped(4600, 4700, "/dev/rbd1", 2).mount(4800, "/dev/rbd1"),
			wantFences: 1,
		},
		{
			name:           "a blocklist that failed fences nothing",
			a:              (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b:              (&log{}).blocklist(4000, 4500, 1, 1).mapped(4600, 4700, "/dev/rbd1", 2).mount(4800, "/dev/rbd1"),
			wantViolations: []string{"4800-100000"},
			wantMapped:     1,
		},
		{
			name:           "a blocklist that was killed fences nothing",
			a:              (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b:              (&log{}).blocklist(4000, -1, 0, 1).mapped(4600, 4700, "/dev/rbd1", 2).mount(4800, "/dev/rbd1"),
			wantViolations: []string{"4800-100000"},
			wantMapped:     1,
		},
		{
			name:           "a fence that ends after node-b's mount started: a short overlap counts",
			a:              (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b:              (&log{}).mapped(4600, 4700, "/dev/rbd1", 2).mount(4800, "/dev/rbd1").blocklist(4700, 4801, 0, 1),
			wantViolations: []string{"4800-4801"},
			wantMapped:     1,
			wantFences:     1,
		},
		{
			name: "frozen between map and record: node-a's device never handed out, unmapped when it runs again",
			a:    (&log{}).mapped(0, 100, "/dev/rbd0", 1).unmapped(9000, 9100, "/dev/rbd0", 1),
			b:    (&log{}).mapped(5000, 5100, "/dev/rbd1", 2).mount(5200, "/dev/rbd1"),
			// Mapped side by side from node-b's map to node-a's unmap.
			wantMapped: 1,
		},
		{
			name: "unmapped before the other node mapped",
			a:    (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0").unmapped(3000, 3100, "/dev/rbd0", 1),
			b:    (&log{}).mapped(5000, 5100, "/dev/rbd1", 2).mount(5200, "/dev/rbd1"),
		},
		{
			name: "a read-only mapping writes nothing",
			a:    (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b: func() *log {
				l := (&log{}).mapped(5000, 5100, "/dev/rbd1", 2).mount(5200, "/dev/rbd1")
				l.entries[2].ReadOnly = true
				return l
			}(),
		},
		{
			name: "a device number used again after an unmap is a new mapping",
			a: (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0").unmapped(3000, 3100, "/dev/rbd0", 1).
				mapped(9000, 9100, "/dev/rbd0", 3),
			b: (&log{}).mapped(5000, 5100, "/dev/rbd1", 2).mount(5200, "/dev/rbd1"),
			// node-a's second mapping is never mounted.
			wantMapped: 1,
		},
		{
			name:       "an unmap of a device never mapped is an error",
			a:          (&log{}).unmapped(3000, 3100, "/dev/rbd0", 1),
			b:          &log{},
			wantErrors: 1,
		},
		{
			name:           "blkid opens the device: a use",
			a:              (&log{}).mapped(0, 100, "/dev/rbd0", 1).call(200, 210, 0, Entry{Tool: "blkid", Device: "/dev/rbd0"}),
			b:              (&log{}).mapped(5000, 5100, "/dev/rbd1", 2).call(5200, 5210, 0, Entry{Tool: "blkid", Device: "/dev/rbd1"}),
			wantViolations: []string{"5200-100000"},
			wantMapped:     1,
		},
		{
			name:       "an end without its start is an error",
			a:          &log{entries: []Entry{{At: at(10), Pid: 99, Kind: End}}},
			b:          &log{},
			wantErrors: 1,
		},
		{
			name: "a device mapped again while it still maps is an error",
			a: func() *log {
				l := (&log{}).mapped(0, 100, "/dev/rbd0", 1)
				return l.mapped(200, 300, "/dev/rbd0", 3)
			}(),
			b:          &log{},
			wantErrors: 1,
			wantMapped: 1,
		},
		{
			// krbd without noshare: one client per node and credential.
			name: "two images mapped through one client on one node: no overlap, no error",
			a: (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0").
				mappedImage(300, 400, "/dev/rbd1", "rbd/other", 1).mount(500, "/dev/rbd1"),
			b: &log{},
		},
		{
			name: "a fence of a shared client counts for each image it maps",
			a: (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0").
				mappedImage(300, 400, "/dev/rbd1", "rbd/other", 1).mount(500, "/dev/rbd1"),
			b: (&log{}).blocklist(4000, 4500, 0, 1).mapped(4600, 4700, "/dev/rbd2", 2).mount(4800, "/dev/rbd2").
				mappedImage(4900, 5000, "/dev/rbd3", "rbd/other", 3).mount(5100, "/dev/rbd3"),
			wantFences: 1,
		},
		{
			// The shim took another node's watcher for its own.
			name:       "one client address on two nodes is an error",
			a:          (&log{}).mapped(0, 100, "/dev/rbd0", 1).mount(200, "/dev/rbd0"),
			b:          (&log{}).mappedImage(5000, 5100, "/dev/rbd1", "rbd/other", 1).mount(5200, "/dev/rbd1"),
			wantErrors: 1,
		},
		{
			name:       "a mount of a device that is not mapped is an error",
			a:          (&log{}).mount(200, "/dev/rbd0"),
			b:          &log{},
			wantErrors: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acc := Account(map[string][]Entry{"node-a": tc.a.entries, "node-b": tc.b.entries}, end)
			var got []string
			mapped := 0
			for _, o := range acc.Overlaps {
				if !o.InUse {
					mapped++
					continue
				}
				got = append(got, fmt.Sprintf("%d-%d", o.From.Sub(t0).Milliseconds(), o.To.Sub(t0).Milliseconds()))
			}
			want := tc.wantViolations
			if !reflect.DeepEqual(got, want) {
				t.Errorf("violations %q, want %q; overlaps %v", got, want, acc.Overlaps)
			}
			if len(acc.Violations()) != len(want) {
				t.Errorf("Violations() has %d, want %d", len(acc.Violations()), len(want))
			}
			if mapped != tc.wantMapped {
				t.Errorf("%d overlaps of mappings not both in use, want %d: %v", mapped, tc.wantMapped, acc.Overlaps)
			}
			if len(acc.Fences) != tc.wantFences {
				t.Errorf("%d fences, want %d: %v", len(acc.Fences), tc.wantFences, acc.Fences)
			}
			if len(acc.Errors) != tc.wantErrors {
				t.Errorf("errors %q, want %d", acc.Errors, tc.wantErrors)
			}
		})
	}
}

func TestAppendRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	want := []Entry{
		{At: at(0), Pid: 7, Kind: Start, Tool: "rbd", Verbs: "map", Image: "rbd/img", Options: "noshare"},
		{At: at(5), Pid: 7, Kind: End, Status: 1},
	}
	for _, e := range want {
		if err := Append(path, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i].At = got[i].At.UTC()
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read %+v, want %+v", got, want)
	}
	calls := Calls("node-a", got)
	if len(calls) != 1 || !calls[0].Ended || calls[0].Status != 1 || calls[0].Name() != "rbd map" {
		t.Errorf("calls %+v, want one rbd map that ended with status 1", calls)
	}
	if none, err := Read(filepath.Join(t.TempDir(), "none")); err != nil || none != nil {
		t.Errorf("a missing log reads %v, %v; want nothing", none, err)
	}
	// A write under way: its line has no newline yet, and waits.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"at":"2026-12-03T12:00:00Z","pid":8,"ki`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, err := Read(path); err != nil || len(got) != len(want) {
		t.Errorf("with a line under way: %d entries, %v; want the %d whole ones", len(got), err, len(want))
	}
}
