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

// Package calllog is a test node's record of what its kubelet did to
// Ceph and to its block devices: every rbd, ceph, mount, umount, fsck and
// mkfs call with its start, end and exit status, and every mapping the
// shim made or removed, with its client. The suite's safety verdict is
// computed from these logs (Account), not sampled.
package calllog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// FileName is the log's name in a node's shim state directory.
const FileName = "calls.jsonl"

// Kinds of entries.
const (
	// Start: a call began (Tool, Verbs and what it names).
	Start = "start"
	// End: the call of the same Pid ended with Status. A call that was
	// killed (the kubelet's deadline, a power-off) has no end.
	End = "end"
	// Mapped: the shim made a device: Device, Image, Client, Address.
	Mapped = "mapped"
	// Unmapped: the shim removed that device; its client is gone.
	Unmapped = "unmapped"
	// Note: something the shim did on its own (held a record write,
	// aborted a FUSE connection).
	Note = "note"
)

// Entry is one line of the log. It never holds a key: only verbs, a pool
// and image, a device, a mount target, an address.
type Entry struct {
	At     time.Time `json:"at"`
	Pid    int       `json:"pid"`
	Kind   string    `json:"kind"`
	Tool   string    `json:"tool,omitempty"`
	Verbs  string    `json:"verbs,omitempty"`
	Status int       `json:"status,omitempty"`
	// Image is "pool/image".
	Image  string `json:"image,omitempty"`
	Device string `json:"device,omitempty"`
	Target string `json:"target,omitempty"`
	Client uint64 `json:"client,omitempty"`
	// Address is a mapping's client's; for a blocklist, the fenced one.
	Address  string `json:"address,omitempty"`
	Options  string `json:"options,omitempty"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	What     string `json:"what,omitempty"`
}

// Append adds e to the log at path (one write, so that concurrent calls
// do not interleave within a line).
func Append(path string, e Entry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(data, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Read returns the entries of the log at path (none if there is none).
// A line it cannot read is an error: the verdict must not skip a call. A
// last line without its newline is a write still under way: left for the
// next read.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var entries []Entry
	r := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return entries, nil
		}
		if err != nil {
			return nil, err
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		entries = append(entries, e)
	}
}

// Call is a start paired with its end.
type Call struct {
	Node  string
	Start Entry
	// End is zero when the call never ended.
	End   time.Time
	Ended bool
	// Status is the exit status (valid when Ended).
	Status int
}

// Name is "tool verbs".
func (c Call) Name() string { return strings.TrimSpace(c.Start.Tool + " " + c.Start.Verbs) }

// Calls pairs each start of node's entries with the next end of its pid.
func Calls(node string, entries []Entry) []Call {
	calls, _ := pair(node, entries)
	return calls
}

// pair pairs starts and ends, and says what it cannot pair: an end with no
// open start of its pid (a start lost, so that end could be taken for
// another call's).
func pair(node string, entries []Entry) ([]Call, []string) {
	var calls []Call
	var errs []string
	open := map[int]int{}
	for _, e := range entries {
		switch e.Kind {
		case Start:
			open[e.Pid] = len(calls)
			calls = append(calls, Call{Node: node, Start: e})
		case End:
			i, ok := open[e.Pid]
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: an end (pid %d, status %d) at %s with no start", node, e.Pid, e.Status,
					e.At.Format(time.RFC3339Nano)))
				continue
			}
			calls[i].End, calls[i].Ended, calls[i].Status = e.At, true, e.Status
			delete(open, e.Pid)
		}
	}
	return calls, errs
}

// Mapping is one device the shim made, from the map call's start to the
// end of its unmap (Gone zero: never unmapped). InUse is when the kubelet
// first handed the device to something that opens it (blkid, fsck, mkfs,
// mount); zero if it never did.
type Mapping struct {
	Node, Device, Image string
	Client              uint64
	Address             string
	ReadOnly            bool
	Options             string
	Begin, Gone, InUse  time.Time
}

func (m Mapping) String() string {
	return fmt.Sprintf("%s %s (client.%d %s)", m.Node, m.Device, m.Client, m.Address)
}

// Fence is a blocklist call that ended with status 0.
type Fence struct {
	Node, Address string
	Start, End    time.Time
}

// Overlap is an interval in which two read-write mappings of one image
// existed and neither client was fenced (by the end of its blocklist
// call). InUse: both had been handed out over the whole interval.
type Overlap struct {
	Image    string
	A, B     Mapping
	From, To time.Time
	InUse    bool
}

func (o Overlap) String() string {
	what := "mapped"
	if o.InUse {
		what = "in use"
	}
	return fmt.Sprintf("%s: %s and %s both %s and unfenced from %s to %s (%v)", o.Image, o.A, o.B, what,
		o.From.Format(stamp), o.To.Format(stamp), o.To.Sub(o.From).Round(time.Millisecond))
}

// stamp is how the verdict's lines give a time (UTC, to the millisecond).
const stamp = "15:04:05.000"

// Accounting is what the logs of every node say.
type Accounting struct {
	Calls    []Call
	Mappings []Mapping
	// Fences is every successful blocklist, in order of its end.
	Fences []Fence
	// Overlaps lists every unfenced overlap of two mappings; those with
	// InUse are the violations: two nodes could write one image.
	Overlaps []Overlap
	// Errors are entries the accounting could not place (a mapped device
	// the shim never logged the map of, a use of an unknown device).
	Errors []string
}

// Violations are the overlaps in which both devices were in use.
func (a Accounting) Violations() []Overlap {
	var v []Overlap
	for _, o := range a.Overlaps {
		if o.InUse {
			v = append(v, o)
		}
	}
	return v
}

// FencedAt is when address was first fenced (the end of its first
// successful blocklist call), and whether it was.
func (a Accounting) FencedAt(address string) (time.Time, bool) {
	for _, f := range a.Fences {
		if f.Address == address {
			return f.End, true
		}
	}
	return time.Time{}, false
}

// deviceUsers are the tools that open a handed-out device.
var deviceUsers = map[string]bool{"blkid": true, "mount": true, "fsck": true, "mkfs": true, "mkfs.ext4": true, "mkfs.xfs": true}

// Account computes, from each node's entries (by node name), every
// mapping, fence and unfenced overlap up to end (mappings still there at
// end are open until then).
func Account(logs map[string][]Entry, end time.Time) Accounting {
	var a Accounting
	nodes := make([]string, 0, len(logs))
	for n := range logs {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, node := range nodes {
		entries := logs[node]
		calls, errs := pair(node, entries)
		a.Calls = append(a.Calls, calls...)
		a.Errors = append(a.Errors, errs...)
		// The map call a mapping came from: the last call of its pid
		// started before the device appeared.
		mapStart := func(e Entry) time.Time {
			begin, found := e.At, false
			for _, c := range calls {
				if c.Start.Pid == e.Pid && c.Name() == "rbd map" && !c.Start.At.After(e.At) {
					begin, found = c.Start.At, true
				}
			}
			if !found {
				a.Errors = append(a.Errors, fmt.Sprintf("%s: %s mapped at %s by no map call (pid %d)", node, e.Device,
					e.At.Format(time.RFC3339Nano), e.Pid))
			}
			return begin
		}
		live := map[string]int{}
		first := len(a.Mappings)
		for _, e := range entries {
			switch e.Kind {
			case Mapped:
				if i, ok := live[e.Device]; ok {
					a.Errors = append(a.Errors, fmt.Sprintf("%s: %s mapped at %s while it still maps client.%d", node, e.Device,
						e.At.Format(time.RFC3339Nano), a.Mappings[i].Client))
				}
				live[e.Device] = len(a.Mappings)
				a.Mappings = append(a.Mappings, Mapping{Node: node, Device: e.Device, Image: e.Image, Client: e.Client,
					Address: e.Address, ReadOnly: e.ReadOnly, Options: e.Options, Begin: mapStart(e)})
			case Unmapped:
				i, ok := live[e.Device]
				if !ok {
					a.Errors = append(a.Errors, fmt.Sprintf("%s: %s unmapped at %s, never mapped", node, e.Device, e.At.Format(time.RFC3339Nano)))
					continue
				}
				a.Mappings[i].Gone = e.At
				delete(live, e.Device)
			}
		}
		// A use starts when a tool that opens the device starts.
		for _, c := range calls {
			if !deviceUsers[c.Start.Tool] || !strings.HasPrefix(c.Start.Device, "/dev/rbd") {
				continue
			}
			placed := false
			for i := first; i < len(a.Mappings); i++ {
				m := &a.Mappings[i]
				if m.Device != c.Start.Device || c.Start.At.Before(m.Begin) || (!m.Gone.IsZero() && !c.Start.At.Before(m.Gone)) {
					continue
				}
				if m.InUse.IsZero() || c.Start.At.Before(m.InUse) {
					m.InUse = c.Start.At
				}
				placed = true
			}
			if !placed {
				a.Errors = append(a.Errors, fmt.Sprintf("%s: %s of %s at %s, no mapping of it then", node, c.Name(), c.Start.Device,
					c.Start.At.Format(time.RFC3339Nano)))
			}
		}
		for _, c := range calls {
			if isBlocklistAdd(c.Name()) && c.Ended && c.Status == 0 && c.Start.Address != "" {
				a.Fences = append(a.Fences, Fence{Node: node, Address: c.Start.Address, Start: c.Start.At, End: c.End})
			}
		}
	}
	sort.SliceStable(a.Fences, func(i, j int) bool { return a.Fences[i].End.Before(a.Fences[j].End) })
	sort.SliceStable(a.Calls, func(i, j int) bool { return a.Calls[i].Start.At.Before(a.Calls[j].Start.At) })
	// until is when m stops counting: its unmap's end, its fence's, or end.
	until := func(m Mapping) time.Time {
		to := end
		if !m.Gone.IsZero() && m.Gone.Before(to) {
			to = m.Gone
		}
		if f, ok := a.FencedAt(m.Address); ok && f.Before(to) {
			to = f
		}
		return to
	}
	for i := range a.Mappings {
		for j := i + 1; j < len(a.Mappings); j++ {
			m, n := a.Mappings[i], a.Mappings[j]
			if m.Address == n.Address && m.Node != n.Node {
				// One client cannot map on two nodes: the shim took another
				// node's watcher for its own, and the verdict cannot tell.
				a.Errors = append(a.Errors, fmt.Sprintf("%s and %s have one client address", m, n))
			}
			if m.Image != n.Image || m.ReadOnly || n.ReadOnly || (m.Address != "" && m.Address == n.Address) {
				continue
			}
			from, to := later(m.Begin, n.Begin), earlier(until(m), until(n))
			if !from.Before(to) {
				continue
			}
			o := Overlap{Image: m.Image, A: m, B: n, From: from, To: to}
			if !m.InUse.IsZero() && !n.InUse.IsZero() {
				if useFrom := later(m.InUse, n.InUse); useFrom.Before(to) {
					a.Overlaps = append(a.Overlaps, Overlap{Image: m.Image, A: m, B: n, From: useFrom, To: to, InUse: true})
					if from.Before(useFrom) {
						o.To = useFrom
					} else {
						continue
					}
				}
			}
			a.Overlaps = append(a.Overlaps, o)
		}
	}
	return a
}

func isBlocklistAdd(name string) bool {
	return name == "ceph osd blocklist add" || name == "ceph osd blacklist add"
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
