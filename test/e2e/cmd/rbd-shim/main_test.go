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

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/calllog"
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

func TestCallLogKeepsOnlyWhatACallNames(t *testing.T) {
	state := t.TempDir()
	const secret = "AQDsecret=="
	for _, c := range []struct {
		tool string
		args []string
	}{
		{"rbd", []string{"status", "rbd/img", "--format=json", "--key=" + secret}},
		{"ceph", []string{"osd", "blocklist", "add", "10.0.0.5:0/1234", "2592000", "--key=" + secret}},
		{"rbd", []string{"image-meta", "set", "rbd/img", "kubernetes.io/rbd-fence.holder.client.1", "{}"}},
		{"rbd", []string{"map", "img", "--pool", "rbd", "--id", "kube", "-m", "m:1", "-o", "noshare", "--key=" + secret}},
		{"rbd", []string{"unmap", "/dev/rbd3"}},
		{"mount", []string{"-t", "ext4", "-o", "defaults", "/dev/rbd3", "/var/lib/kubelet/plugins/x"}},
		{"fsck", []string{"-a", "/dev/rbd3"}},
	} {
		if err := logStart(state, c.tool, c.args); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := calllog.Read(filepath.Join(state, calllog.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, strings.Join([]string{e.Tool, e.Verbs, e.Image, e.Device, e.Target, e.Address, e.Options}, "|"))
	}
	want := []string{
		"rbd|status|||||",
		// A blocklist keeps the client it fences (an address, no secret).
		"ceph|osd blocklist add||||10.0.0.5:0/1234|",
		"rbd|image-meta set|||||",
		"rbd|map|rbd/img||||noshare",
		"rbd|unmap||/dev/rbd3|||",
		"mount|||/dev/rbd3|/var/lib/kubelet/plugins/x||",
		"fsck|||/dev/rbd3|||",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("calls\n%q\nwant\n%q", got, want)
	}
	data, err := os.ReadFile(filepath.Join(state, calllog.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "AQDsecret") {
		t.Errorf("the key is in the call log:\n%s", data)
	}
}
