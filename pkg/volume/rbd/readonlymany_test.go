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

package rbd_test

import (
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// TestReadOnlyManyMapping pins docs/design.md's node-side table: which uses of an
// RBD volume pass the watcher gate, and which are mapped read-only. Across
// every row it also checks guarantee 1: a mapping made without the gate is
// read-only at the block layer.
func TestReadOnlyManyMapping(t *testing.T) {
	rox := v1.ReadOnlyMany
	rwo := v1.ReadWriteOnce
	modes := func(m ...v1.PersistentVolumeAccessMode) []v1.PersistentVolumeAccessMode { return m }
	always := func(int) int { return 1 }
	goneAfterFirstCheck := func(n int) int {
		if n == 0 {
			return 1
		}
		return 0
	}
	none := func(int) int { return 0 }

	rows := []struct {
		name         string
		use          volumeUse
		watchers     func(n int) int
		nbd          bool
		wantGate     bool
		wantReadOnly bool
	}{
		{name: "inline volume keeps the gate and maps read-write",
			use: volumeUse{inline: true, readOnly: true}, watchers: none, wantGate: true},
		{name: "RWO keeps the gate and maps read-write",
			use: volumeUse{accessModes: modes(rwo)}, watchers: none, wantGate: true},
		{name: "RWO used read-only keeps the gate and maps read-write",
			use: volumeUse{accessModes: modes(rwo), readOnly: true}, watchers: none, wantGate: true},
		{name: "RWO and ROX used read-only keeps the gate",
			use: volumeUse{accessModes: modes(rwo, rox), readOnly: true}, watchers: none, wantGate: true},
		{name: "RWX keeps the gate",
			use: volumeUse{accessModes: modes(v1.ReadWriteMany)}, watchers: none, wantGate: true},
		{name: "RWOP keeps the gate",
			use: volumeUse{accessModes: modes(v1.ReadWriteOncePod)}, watchers: none, wantGate: true},
		{name: "ROX only used read-only maps read-only without the gate",
			use: volumeUse{accessModes: modes(rox), readOnly: true}, watchers: always, wantReadOnly: true},
		{name: "repeated ROX used read-only maps read-only without the gate",
			use: volumeUse{accessModes: modes(rox, rox), readOnly: true}, watchers: goneAfterFirstCheck, wantReadOnly: true},
		{name: "ROX only used read-only falls back to rbd-nbd read-only",
			use: volumeUse{accessModes: modes(rox), readOnly: true}, watchers: always, nbd: true, wantReadOnly: true},
		{name: "ROX only used read-write waits for the watcher to go",
			use: volumeUse{accessModes: modes(rox)}, watchers: goneAfterFirstCheck, wantGate: true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			tools := newRBDTools()
			tools.watchers = row.watchers
			tools.nbd = row.nbd
			attacher := newAttacher(t, tools)

			_, err := attacher.WaitForAttach(row.use.spec(), "", specPod(), time.Minute)
			if err == nil || !strings.Contains(err.Error(), "map failed") {
				t.Fatalf("WaitForAttach error = %v, want the scripted map failure", err)
			}

			var maps []invocation
			gatedBeforeMap := false
			for _, inv := range tools.invocations() {
				if len(inv.args) == 0 {
					continue
				}
				switch {
				case inv.cmd == "rbd" && inv.args[0] == "status" && len(maps) == 0:
					gatedBeforeMap = true
				case (inv.cmd == "rbd" || inv.cmd == "rbd-nbd") && inv.args[0] == "map":
					maps = append(maps, inv)
				}
			}
			if len(maps) == 0 {
				t.Fatalf("no map was attempted; commands: %v", tools.invocations())
			}
			if row.nbd && len(maps) != 2 {
				t.Errorf("got %d map calls, want rbd then rbd-nbd: %v", len(maps), maps)
			}
			if gatedBeforeMap != row.wantGate {
				t.Errorf("watcher gate ran before map = %v, want %v", gatedBeforeMap, row.wantGate)
			}
			for _, m := range maps {
				if ro := m.has("--read-only"); ro != row.wantReadOnly {
					t.Errorf("%s: read-only = %v, want %v", m.cmd, ro, row.wantReadOnly)
				}
				if !gatedBeforeMap && !m.has("--read-only") {
					t.Errorf("guarantee 1: %s mapped read-write without passing the watcher gate", m.cmd)
				}
			}
		})
	}
}
