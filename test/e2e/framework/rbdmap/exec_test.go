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

package rbdmap

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
)

func TestMapExecTurnsRbdMapIntoAHolder(t *testing.T) {
	holder := &ceph.Holder{Address: "127.0.0.1:0/1", Client: 7}
	var heldArgs, checked []string
	var released *ceph.Holder
	e := &Exec{Interface: exec.New(), Hold: func(args []string) (*ceph.Holder, error) {
		heldArgs = args
		return holder, nil
	}, CheckArgs: func(_ context.Context, args []string) error {
		checked = args
		return nil
	}, Release: func(h *ceph.Holder) { released = h }}
	out, err := e.CommandContext(context.Background(), "rbd", "map", "rbd/img", "--read-only").CombinedOutput()
	if err != nil {
		t.Fatalf("rbd map: %v (%s), want success once the holder runs", err, out)
	}
	got, args, at := e.Held()
	if got != holder || len(args) != 3 || args[2] != "--read-only" || len(heldArgs) != 3 || len(checked) != 3 || at.IsZero() {
		t.Errorf("held %v %v at %v (checked %v), want the holder and the map's arguments", got, args, at, checked)
	}
	// The plugin's unmap of the image after a failed claim lets go of it.
	if _, err := e.Command("rbd", "unmap", "rbd/img").CombinedOutput(); err != nil {
		t.Fatalf("rbd unmap: %v", err)
	}
	if h, _, _ := e.Held(); h != nil || released != holder {
		t.Errorf("still held after the unmap (%v), or released %v instead of the holder", h, released)
	}
	// Other commands run for real.
	if out, err := e.Command("echo", "status").CombinedOutput(); err != nil || string(out) != "status\n" {
		t.Errorf("echo: %q %v", out, err)
	}
}

func TestMapExecRefusesWhatRbdRefuses(t *testing.T) {
	e := &Exec{Interface: exec.New(), Hold: func([]string) (*ceph.Holder, error) {
		t.Fatal("a holder started for arguments rbd refused")
		return nil, nil
	}, CheckArgs: func(context.Context, []string) error {
		return ceph.CheckMapFailedAtKernel([]byte("rbd: unknown map option 'noshareX'\nrbd: couldn't parse map options"), errors.New("exit status 22"))
	}}
	if _, err := e.Command("rbd", "map", "rbd/img", "-o", "noshareX").CombinedOutput(); err == nil || !strings.Contains(err.Error(), "refused the map arguments") {
		t.Fatalf("error = %v, want the argument check's", err)
	}
}

func TestMapExecReportsAHolderThatFailed(t *testing.T) {
	e := &Exec{Interface: exec.New(), Hold: func([]string) (*ceph.Holder, error) {
		return nil, errors.New("cannot connect")
	}, CheckArgs: func(context.Context, []string) error { return nil }}
	if _, err := e.Command("rbd", "map", "rbd/img").CombinedOutput(); err == nil || err.Error() != "cannot connect" {
		t.Fatalf("error = %v, want the holder's", err)
	}
	if h, _, _ := e.Held(); h != nil {
		t.Errorf("held %v after a failed hold", h)
	}
}

func TestCheckMapFailedAtKernel(t *testing.T) {
	exit := errors.New("exit status 2")
	for _, tc := range []struct {
		out  string
		err  error
		want string
	}{
		{out: "rbd: failed to get mon address (possible ms_mode mismatch)\nrbd: map failed: (2) No such file or directory\n", err: exit},
		{out: "rbd: sysfs write failed\nrbd: map failed: (1) Operation not permitted\n", err: exit},
		{out: "rbd: unknown map option 'noshareX'\nrbd: couldn't parse map options\n", err: exit, want: "refused"},
		{out: "rbd: unrecognised option '--bogus'\n", err: exit, want: "refused"},
		{out: "rbd: couldn't connect to the cluster!\n", err: exit, want: "before the kernel step"},
		{out: "/dev/rbd0\n", want: "succeeded without a kernel module"},
	} {
		err := ceph.CheckMapFailedAtKernel([]byte(tc.out), tc.err)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckMapFailedAtKernel(%q) = %v, want %q", tc.out, err, tc.want)
		}
	}
}
