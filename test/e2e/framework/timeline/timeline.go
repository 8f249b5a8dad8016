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

// Package timeline records what happened in an end-to-end scenario, on
// which lane (the control plane, a node, Ceph) and when, and draws it: a
// Markdown list for the report and an SVG picture with one column per lane
// and one row per event, builds side by side.
package timeline

import (
	"fmt"
	"html"
	"sort"
	"strings"
	"sync"
	"time"
)

// Event is one thing that happened.
type Event struct {
	At   time.Time
	Lane string
	What string
}

// Timeline is the events of one scenario against one build.
type Timeline struct {
	// Title names the build ("stock", "patched").
	Title string
	// Lanes are the columns, in order.
	Lanes []string
	// Start is time zero (the failure the scenario injects).
	Start time.Time

	mu     sync.Mutex
	events []Event
}

// New starts a timeline whose time zero is now.
func New(title string, lanes ...string) *Timeline {
	return &Timeline{Title: title, Lanes: lanes, Start: time.Now()}
}

// Add records what happened on lane at at.
func (t *Timeline) Add(at time.Time, lane, format string, args ...interface{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, Event{At: at, Lane: lane, What: fmt.Sprintf(format, args...)})
}

// Mark records what happens on lane now.
func (t *Timeline) Mark(lane, format string, args ...interface{}) {
	t.Add(time.Now(), lane, format, args...)
}

// SetStart moves time zero (to the failure, once it is injected).
func (t *Timeline) SetStart(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Start = at
}

// Events returns the events in time order, a run of the same event on one
// lane (a gate's repeated checks) folded into one with a count.
func (t *Timeline) Events() []Event {
	t.mu.Lock()
	evs := append([]Event(nil), t.events...)
	t.mu.Unlock()
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
	var out []Event
	var counts []int
	var last []time.Time
	for _, e := range evs {
		if n := len(out); n > 0 && out[n-1].Lane == e.Lane && out[n-1].What == e.What {
			counts[n-1]++
			last[n-1] = e.At
			continue
		}
		out, counts, last = append(out, e), append(counts, 1), append(last, e.At)
	}
	for i := range out {
		if counts[i] > 1 {
			out[i].What = fmt.Sprintf("%s ×%d (to %s)", out[i].What, counts[i], t.offset(last[i]))
		}
	}
	return out
}

// offset is at as seconds from time zero.
func (t *Timeline) offset(at time.Time) string {
	return fmt.Sprintf("%+.1fs", at.Sub(t.Start).Seconds())
}

// Find returns the first event on lane whose text starts with prefix.
func (t *Timeline) Find(lane, prefix string) (Event, bool) {
	for _, e := range t.Events() {
		if e.Lane == lane && strings.HasPrefix(e.What, prefix) {
			return e, true
		}
	}
	return Event{}, false
}

// Markdown is the timeline as a list: "- +12.3s node-b: rbd map".
func (t *Timeline) Markdown() string {
	var b strings.Builder
	for _, e := range t.Events() {
		fmt.Fprintf(&b, "  - %s %s: %s\n", t.offset(e.At), e.Lane, e.What)
	}
	return b.String()
}

// Geometry of the picture.
const (
	rowHeight  = 18
	timeWidth  = 64
	laneWidth  = 250
	headHeight = 20
	panelGap   = 24
	// labelChars fit a lane at about 6.2 px a character of 11 px text; the
	// whole label is the event's tooltip.
	labelChars = 36
)

// SVG draws timelines side by side, two to a row (say stock, then
// patched): per panel a time column and one column per lane, one row per
// event.
func SVG(title string, panels ...*Timeline) string {
	const perRow = 2
	width, height := 0, 24
	var tops []int
	for i := 0; i < len(panels); i += perRow {
		rowWidth, events := 0, 0
		for _, p := range panels[i:min(i+perRow, len(panels))] {
			rowWidth += timeWidth + laneWidth*len(p.Lanes) + panelGap
			events = max(events, len(p.Events()))
		}
		width = max(width, rowWidth)
		tops = append(tops, height)
		height += headHeight + 24 + events*rowHeight + 12
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="8" y="16" font-size="13" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	for i, p := range panels {
		top := tops[i/perRow]
		bottom := height
		if i/perRow+1 < len(tops) {
			bottom = tops[i/perRow+1]
		}
		x0 := 0
		for _, q := range panels[i-i%perRow : i] {
			x0 += timeWidth + laneWidth*len(q.Lanes) + panelGap
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" font-weight="bold">%s</text>`+"\n", x0+8, top+10, html.EscapeString(p.Title))
		lanes := map[string]int{}
		for j, l := range p.Lanes {
			lanes[l] = j
			x := x0 + timeWidth + j*laneWidth
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", x, top+20, laneWidth-4,
				bottom-top-28, []string{"#f4f6fb", "#f7f7f2"}[j%2])
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x+6, top+34, html.EscapeString(l))
		}
		for r, e := range p.Events() {
			y := top + 44 + r*rowHeight + 12
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">%s</text>`+"\n", x0+8, y, p.offset(e.At))
			j, ok := lanes[e.Lane]
			if !ok {
				continue
			}
			x := x0 + timeWidth + j*laneWidth
			color := "#1f5fbf"
			if strings.Contains(e.What, "Multi-Attach") || strings.Contains(e.What, "refused") ||
				strings.Contains(e.What, "landed") || strings.Contains(e.What, "double") || strings.Contains(e.What, "unfenced") {
				color = "#b3261e"
			}
			fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="3" fill="%s"/>`+"\n", x+8, y-4, color)
			fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s"><title>%s</title>%s</text>`+"\n", x+15, y, color,
				html.EscapeString(e.What), html.EscapeString(clip(e.What, labelChars)))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
