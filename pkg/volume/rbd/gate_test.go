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
	"os"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

var rwo = volumeUse{accessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}}

// TestWatcherGateFailsClosed pins guarantee 2 of docs/design.md: rbd status output that does
// not say "no watchers" is an error, and nothing is mapped.
func TestWatcherGateFailsClosed(t *testing.T) {
	rows := []struct {
		name    string
		status  reply
		wantMap bool
	}{
		{name: "empty output is an error", status: reply{out: ""}},
		{name: "only a warning is an error", status: reply{stderr: "2026-11-26T12:00:00.000+0000 7f0 -1 auth: unable to find a keyring\n"}},
		{name: "truncated output is an error", status: reply{out: `{"watchers":[{"address":"10.0.0.5:0/1234","cli`}},
		{name: "a failing rbd status is an error", status: reply{stderr: "rbd: error opening image user-pv: (2) No such file or directory\n", rc: 2}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			tools := newRBDTools()
			tools.status = func(int, bool) reply { return row.status }
			_, err := newAttacher(t, tools).WaitForAttach(rwo.spec(), "", specPod(), time.Minute)
			if err == nil {
				t.Fatalf("WaitForAttach succeeded, want an error")
			}
			if maps := append(tools.find("rbd", "map"), tools.find("rbd-nbd", "map")...); len(maps) > 0 {
				t.Errorf("mapped after unreadable rbd status (%v): %v", err, maps)
			}
			if n := len(tools.find("rbd", "status")); n == 0 {
				t.Errorf("rbd status never ran")
			}
		})
	}
}

// TestWatcherGateReadsBothForms checks that the gate reads the watchers
// whether rbd answers in JSON or, refusing --format, in plain text.
func TestWatcherGateReadsBothForms(t *testing.T) {
	for _, refuseJSON := range []bool{false, true} {
		name := "JSON"
		if refuseJSON {
			name = "plain text when JSON is refused"
		}
		t.Run(name, func(t *testing.T) {
			tools := newRBDTools()
			tools.status = func(n int, json bool) reply {
				if json && refuseJSON {
					return reply{stderr: "rbd: unrecognised option '--format=json'\n", rc: 22}
				}
				// One watcher at the first answer, then none.
				w := 0
				if n == 0 || (refuseJSON && n == 1) {
					w = 1
				}
				return statusReply(w, json)
			}
			_, err := newAttacher(t, tools).WaitForAttach(rwo.spec(), "", specPod(), time.Minute)
			if err == nil || !strings.Contains(err.Error(), "map failed") {
				t.Fatalf("WaitForAttach error = %v, want the scripted map failure after the gate", err)
			}
			if len(tools.find("rbd", "status")) < 2 {
				t.Errorf("the gate did not wait for the watcher: %v", tools.invocations())
			}
		})
	}
}

// TestWatcherGateNamesWatchers checks that when the wait runs out (about
// 49 s with upstream's backoff) the error names the image and every watcher.
func TestWatcherGateNamesWatchers(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the whole watcher backoff")
	}
	t.Parallel()
	tools := newRBDTools()
	tools.watchers = func(int) int { return 2 }
	_, err := newAttacher(t, tools).WaitForAttach(rwo.spec(), "", specPod(), time.Minute)
	want := "rbd image sock_shop/user-pv is still being used by 2 watcher(s): " +
		"10.0.0.5:0/1234 (client.4567), 10.0.0.5:0/1234 (client.4568)"
	if err == nil || err.Error() != want {
		t.Errorf("WaitForAttach error = %v\nwant %s", err, want)
	}
	if maps := tools.find("rbd", "map"); len(maps) > 0 {
		t.Errorf("mapped while watchers remain: %v", maps)
	}
}

// TestNoKeyOnArgvOrInLogs pins guarantee 5 of docs/design.md for the attach path: the cephx
// key is on no command line and in no log line (at -v=10); rbd gets it from a
// key file that is gone once the call returns.
func TestNoKeyOnArgvOrInLogs(t *testing.T) {
	logs := captureLogs(t)

	tools := newRBDTools()
	tools.watchers = func(n int) int { return 1 - min(n, 1) }
	_, err := newAttacher(t, tools).WaitForAttach(rwo.spec(), "", specPod(), time.Minute)
	if err == nil || !strings.Contains(err.Error(), "map failed") {
		t.Fatalf("WaitForAttach error = %v, want the scripted map failure", err)
	}
	rbdCalls := 0
	for _, inv := range tools.invocations() {
		if inv.cmd != "rbd" && inv.cmd != "rbd-nbd" {
			continue
		}
		rbdCalls++
		if strings.Contains(strings.Join(inv.args, " "), specKey) {
			t.Errorf("the key is on the command line: %s", inv)
		}
		found := false
		for path, content := range inv.keyFiles {
			if content == specKey {
				found = true
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("key file %s still exists after %s (%v)", path, inv.args[0], err)
			}
		}
		if !found {
			t.Errorf("%s did not get the key from a key file: %s", inv.args[0], inv)
		}
	}
	if rbdCalls < 3 {
		t.Errorf("want at least two status checks and a map, got %d rbd calls", rbdCalls)
	}
	if strings.Contains(logs(), specKey) {
		t.Errorf("the key is in the log output")
	}
	if len(logs()) == 0 {
		t.Errorf("captured no log output; the log check proves nothing")
	}
}
