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

package node

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdplugin"
)

// nbdExec runs everything for real except "modprobe nbd", which it answers
// with success as a node with the nbd module would, so that the plugin falls
// back to the real rbd-nbd after the real rbd map fails at the kernel step.
// It keeps what each rbd-nbd map printed.
type nbdExec struct {
	*rbdplugin.RecordingExec
	mu  sync.Mutex
	out [][]byte
	err []error
}

func (e *nbdExec) Command(cmd string, args ...string) exec.Cmd {
	return e.CommandContext(context.Background(), cmd, args...)
}

func (e *nbdExec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	if cmd == "modprobe" && len(args) == 1 && args[0] == "nbd" {
		return e.RecordingExec.CommandContext(ctx, "true")
	}
	c := e.RecordingExec.CommandContext(ctx, cmd, args...)
	if cmd == "rbd-nbd" && len(args) > 0 && args[0] == "map" {
		return &keptOutput{Cmd: c, keep: e.keep}
	}
	return c
}

func (e *nbdExec) keep(out []byte, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out, e.err = append(e.out, out), append(e.err, err)
}

type keptOutput struct {
	exec.Cmd
	keep func([]byte, error)
}

func (c *keptOutput) CombinedOutput() ([]byte, error) {
	out, err := c.Cmd.CombinedOutput()
	c.keep(out, err)
	return out, err
}

// TestNbdMapArgsAcceptedByTheRealRbdNbd runs the plugin's rbd-nbd fallback
// with the real rbd-nbd: the argv the plugin builds (key file, timeouts,
// read-only or not) must get past rbd-nbd's option parsing and its cluster
// connection, and fail only where the nbd kernel module is needed.
func TestNbdMapArgsAcceptedByTheRealRbdNbd(t *testing.T) {
	for _, readOnly := range []bool{false, true} {
		name := "nbd-rw"
		if readOnly {
			name = "nbd-ro"
		}
		t.Run(name, func(t *testing.T) {
			vol := newImage(t, name)
			if readOnly {
				// Only a ROX-only volume used read-only maps read-only.
				vol.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}
				vol.ReadOnly = true
			}
			e := &nbdExec{RecordingExec: rbdplugin.NewRecordingExec()}
			a := rbdplugin.NewAttacher(t, e, cluster.UserKey)
			_, err := a.WaitForAttach(vol.Spec(), "", rbdplugin.Pod(), time.Minute)
			if err == nil {
				t.Fatal("WaitForAttach succeeded without nbd or rbd kernel modules")
			}
			calls := e.Calls("rbd-nbd", "map")
			if len(calls) != 1 || len(e.out) != 1 {
				t.Fatalf("rbd-nbd map ran %d times (%d outputs), want once: %v", len(calls), len(e.out), err)
			}
			if checkErr := ceph.CheckNbdMapFailedAtKernel(e.out[0], e.err[0]); checkErr != nil {
				t.Fatalf("rbd-nbd %q: %v", calls[0].Args[1:], checkErr)
			}
			if readOnly != contains(calls[0].Args, "--read-only") {
				t.Errorf("rbd-nbd map %q: --read-only present %v, want %v", calls[0].Args[1:], !readOnly, readOnly)
			}
			for _, a := range calls[0].Args {
				if strings.Contains(a, cluster.UserKey) {
					t.Errorf("the key is on rbd-nbd's command line: %q", calls[0].Args)
				}
			}
			report("- rbd-nbd map argv (%s) accepted by the real rbd-nbd, failed at the nbd module: %q\n",
				name, strings.TrimSpace(lastLine(e.out[0])))
		})
	}
}

func lastLine(out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
