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

package timeline

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

func TestEventsInOrderWithRunsFolded(t *testing.T) {
	tl := New("patched", "control plane", "node-b")
	t0 := tl.Start
	tl.Add(t0.Add(3*time.Second), "node-b", "rbd status")
	tl.Add(t0.Add(1*time.Second), "control plane", "attached to node-b")
	tl.Add(t0.Add(2*time.Second), "node-b", "rbd status")
	tl.Add(t0.Add(4*time.Second), "node-b", "rbd map")
	tl.Add(t0.Add(5*time.Second), "node-b", "rbd status")
	var got []string
	for _, e := range tl.Events() {
		got = append(got, e.Lane+": "+e.What)
	}
	want := []string{"control plane: attached to node-b", "node-b: rbd status ×2 (to +3.0s)", "node-b: rbd map", "node-b: rbd status"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestSVGIsWellFormedAndEscaped(t *testing.T) {
	a := New("stock", "control plane", "node-b")
	a.Mark("control plane", `Multi-Attach error for volume "v" <used>`)
	b := New("patched", "control plane", "node-b")
	b.Mark("node-b", "rbd map & record")
	svg := SVG("power-off: stock & patched", a, b)
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{"stock", "patched", "Multi-Attach error", "rbd map &amp; record"} {
		if !strings.Contains(svg, want) {
			t.Errorf("picture lacks %q", want)
		}
	}
}
