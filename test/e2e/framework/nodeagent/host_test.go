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

package nodeagent

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
	var heldArgs []string
	e := &mapExec{Interface: exec.New(), hold: func(args []string) (*ceph.Holder, error) {
		heldArgs = args
		return holder, nil
	}}
	out, err := e.CommandContext(context.Background(), "rbd", "map", "rbd/img", "--read-only").CombinedOutput()
	if !errors.Is(err, errMapHeld) {
		t.Fatalf("rbd map: %v (%s), want errMapHeld", err, out)
	}
	got, args := e.held()
	if got != holder || len(args) != 3 || !readOnlyMap(args) || len(heldArgs) != 3 {
		t.Errorf("held %v %v, want the holder and the map's arguments", got, args)
	}
	// Other commands run for real.
	if out, err := e.Command("echo", "status").CombinedOutput(); err != nil || string(out) != "status\n" {
		t.Errorf("echo: %q %v", out, err)
	}
}

func TestMapExecReportsAHolderThatFailed(t *testing.T) {
	e := &mapExec{Interface: exec.New(), hold: func([]string) (*ceph.Holder, error) {
		return nil, errors.New("cannot connect")
	}}
	if _, err := e.Command("rbd", "map", "rbd/img").CombinedOutput(); err == nil || err.Error() != "cannot connect" {
		t.Fatalf("error = %v, want the holder's", err)
	}
	if h, _ := e.held(); h != nil {
		t.Errorf("held %v after a failed hold", h)
	}
}

func TestReadOnlyMap(t *testing.T) {
	for args, want := range map[string]bool{
		"map rbd/img --read-only --id kube": true,
		"map rbd/img --id kube":             false,
	} {
		if got := readOnlyMap(strings.Fields(args)); got != want {
			t.Errorf("readOnlyMap(%q) = %v, want %v", args, got, want)
		}
	}
}
