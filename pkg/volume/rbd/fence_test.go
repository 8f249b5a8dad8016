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
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

const (
	holderKey    = "kubernetes.io/rbd-fence.holder.client.4567"
	holderRecord = `{"address":"10.0.0.5:0/1234","client":4567,"node":"node-a"}`
)

// recordedHolder is rbd image-meta list for an image whose last read-write
// mapping (node-a's) never unmapped cleanly.
var recordedHolder = reply{out: fmt.Sprintf(`{"kubernetes.io/rbd-fence.version":"1",%q:%q}`+"\n", holderKey, holderRecord)}

// TestFenceBeforeMap pins the fence of docs/design.md (an expired watch is
// not a fence): once the watcher gate passes, the kubelet blocklists the
// client the image records as its holder and maps only after Ceph confirmed;
// a failed blocklist maps nothing; nothing is recorded before the new
// device is found; each read-write mapping is its own Ceph client.
func TestFenceBeforeMap(t *testing.T) {
	rows := []struct {
		name     string
		use      volumeUse
		meta     reply
		ceph     []reply
		mapReply *reply
		// after the map, for a map that succeeds
		watchersAfterMap int

		wantVerbs []string // ceph osd <verb> add, in order
		wantMap   bool
		wantUnmap bool
		wantErr   string
		wantLog   string
		noMeta    bool // no image-meta and no ceph call at all
		noRecord  bool // no image-meta set
	}{
		{name: "recorded holder is blocklisted before the map", use: rwo, meta: recordedHolder,
			wantVerbs: []string{"blocklist"}, wantMap: true},
		{name: "pre-Pacific monitors get osd blacklist", use: rwo, meta: recordedHolder,
			ceph:      []reply{{stderr: "no valid command found; 10 closest matches:\nosd perf\nError EINVAL: invalid command\n", rc: 22}},
			wantVerbs: []string{"blocklist", "blacklist"}, wantMap: true},
		{name: "refused blocklist maps nothing", use: rwo, meta: recordedHolder,
			ceph:      []reply{{stderr: "Error EACCES: access denied\n", rc: 13}},
			wantVerbs: []string{"blocklist"}, wantErr: "10.0.0.5:0/1234 (client.4567, node node-a)"},
		{name: "no record maps as before and warns", use: rwo, meta: reply{},
			wantMap: true, wantLog: "has no holder record"},
		// The record names the new device's own client, so nothing is
		// recorded before the device is found (the record-then-verify rows
		// are the plugin's unit tests, which can stand in for the kernel).
		{name: "a map whose device is not found records nothing", use: rwo, meta: reply{},
			mapReply: &reply{}, watchersAfterMap: 1, wantMap: true, wantErr: "could not map image", noRecord: true},
		{name: "read-only ROX mapping neither fences nor records",
			use:  volumeUse{accessModes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, readOnly: true},
			meta: recordedHolder, wantMap: true, noMeta: true},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			logs := captureLogs(t)
			tools := newRBDTools()
			tools.meta = row.meta
			tools.ceph = row.ceph
			tools.watchersAfterMap = row.watchersAfterMap
			if row.mapReply != nil {
				tools.mapReply = *row.mapReply
			}
			_, err := newAttacher(t, tools).WaitForAttach(row.use.spec(), "", specPod(), time.Minute)
			if err == nil {
				t.Fatalf("WaitForAttach succeeded; a unit test has no device to find")
			}
			if row.wantErr != "" && !strings.Contains(err.Error(), row.wantErr) {
				t.Errorf("WaitForAttach error = %v, want one containing %q", err, row.wantErr)
			}

			calls := tools.invocations()
			mapAt, verbs := -1, []string{}
			for i, inv := range calls {
				if (inv.cmd == "rbd" || inv.cmd == "rbd-nbd") && len(inv.args) > 0 && inv.args[0] == "map" && mapAt < 0 {
					mapAt = i
				}
				if inv.cmd == "ceph" {
					if len(inv.args) < 4 || inv.args[0] != "osd" || inv.args[2] != "add" || inv.args[3] != "10.0.0.5:0/1234" {
						t.Errorf("unexpected ceph call %s", inv)
						continue
					}
					verbs = append(verbs, inv.args[1])
					if mapAt >= 0 {
						t.Errorf("%s ran after the map", inv)
					}
				}
				// The fence's own calls (TestNoKeyOnArgvOrInLogs covers the rest).
				fenceCall := inv.cmd == "ceph" || len(inv.args) > 0 && inv.args[0] == "image-meta"
				if fenceCall && strings.Contains(strings.Join(inv.args, " "), specKey) {
					t.Errorf("the key is on the command line: %s", inv)
				}
			}
			if strings.Join(verbs, ",") != strings.Join(row.wantVerbs, ",") {
				t.Errorf("ceph osd verbs %q, want %q; calls: %v", verbs, row.wantVerbs, calls)
			}
			if (mapAt >= 0) != row.wantMap {
				t.Errorf("mapped: %v, want %v; calls: %v", mapAt >= 0, row.wantMap, calls)
			}
			if row.wantMap && !row.use.readOnly {
				if m := calls[mapAt]; !m.has("noshare") {
					t.Errorf("read-write map %s is not its own Ceph client (-o noshare)", m)
				}
			}
			if unmaps := tools.find("rbd", "unmap"); (len(unmaps) > 0) != row.wantUnmap {
				t.Errorf("unmaps %v, want unmap: %v", unmaps, row.wantUnmap)
			}
			if row.noMeta && (len(tools.find("rbd", "image-meta")) > 0 || len(tools.find("ceph", "osd")) > 0) {
				t.Errorf("a read-only mapping read or wrote holder records: %v", calls)
			}
			for _, inv := range tools.find("rbd", "image-meta") {
				if row.noRecord && inv.has("set") {
					t.Errorf("a record was written before the device was found: %s", inv)
				}
			}
			if row.wantLog != "" && !strings.Contains(logs(), row.wantLog) {
				t.Errorf("no log line with %q", row.wantLog)
			}
		})
	}
}
