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

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseMap(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		want    mapArgs
		wantErr bool
	}{
		{
			name: "read-write, as the patched plugin maps",
			args: []string{"map", "rbd/img", "--id", "kube", "-m", "10.0.0.1:6789", "-o", "noshare",
				"--client-mount-timeout=30", "--keyfile=/k/key"},
			want: mapArgs{pool: "rbd", image: "img", id: "kube", mon: "10.0.0.1:6789", keyfile: "/k/key", options: "noshare"},
		},
		{
			name: "read-only with a keyring",
			args: []string{"map", "rbd/img", "--read-only", "--id=admin", "-m", "10.0.0.1:6789", "-k", "/etc/ceph/keyring"},
			want: mapArgs{pool: "rbd", image: "img", id: "admin", mon: "10.0.0.1:6789", keyring: "/etc/ceph/keyring", readOnly: true},
		},
		{
			name: "pool apart",
			args: []string{"map", "img", "--pool", "p", "--id", "kube", "-m", "m:1"},
			want: mapArgs{pool: "p", image: "img", id: "kube", mon: "m:1"},
		},
		{name: "no monitors", args: []string{"map", "rbd/img", "--id", "kube"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMap(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want an error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseMap = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseMapErrorHidesTheKey(t *testing.T) {
	_, err := parseMap([]string{"map", "img", "--id", "kube", "--key=AQDsecret=="})
	if err == nil || strings.Contains(err.Error(), "AQDsecret") {
		t.Errorf("error %v, want one without the key", err)
	}
}

func TestLogCallKeepsOnlyTheVerbs(t *testing.T) {
	state := t.TempDir()
	logCall(state, "rbd", []string{"status", "rbd/img", "--format=json", "--key=AQDsecret=="})
	logCall(state, "ceph", []string{"osd", "blocklist", "add", "10.0.0.5:0/1234", "2592000"})
	logCall(state, "rbd", []string{"image-meta", "set", "img", "kubernetes.io/rbd-fence.holder.client.1", "{}"})
	data, err := os.ReadFile(filepath.Join(state, "calls.log"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		_, call, _ := strings.Cut(line, " ")
		got = append(got, call)
	}
	// A blocklist keeps the client it fences (an address, no secret).
	want := []string{"rbd status", "ceph osd blocklist add 10.0.0.5:0/1234", "rbd image-meta set img"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if strings.Contains(string(data), "AQDsecret") {
		t.Errorf("the key is in the call log:\n%s", data)
	}
}
