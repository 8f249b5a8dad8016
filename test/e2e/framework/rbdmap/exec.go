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

// Package rbdmap stands in for the kernel where the RBD plugin needs it:
// there is no rbd module on the test machine.
package rbdmap

import (
	"context"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
)

// Exec runs every command for real except what only the kernel can do.
// "rbd map" first runs for real with the plugin's arguments and must fail
// at the kernel step, which proves rbd accepts them; then Hold starts a
// librbd client that opens the image (so the image gets the watch a kernel
// mapping would give it) and the map succeeds. "rbd unmap POOL/IMAGE" (the
// plugin's unmap after a failed claim) releases that client.
type Exec struct {
	exec.Interface
	// Hold starts the client that stands in for the mapping.
	Hold func(args []string) (*ceph.Holder, error)
	// CheckArgs runs the real "rbd map" (tests replace it), and Release
	// closes a holder (tests replace it).
	CheckArgs func(ctx context.Context, args []string) error
	Release   func(*ceph.Holder)

	mu     sync.Mutex
	holder *ceph.Holder
	args   []string
	heldAt time.Time
}

// CommandContext implements exec.Interface.
func (e *Exec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	if cmd == "rbd" && len(args) > 1 && args[0] == "map" {
		return &cmdFunc{Cmd: e.Interface.CommandContext(ctx, "true"), run: func() ([]byte, error) { return e.mapImage(ctx, args) }}
	}
	if cmd == "rbd" && len(args) > 1 && args[0] == "unmap" && !strings.HasPrefix(args[1], "/dev/") {
		return &cmdFunc{Cmd: e.Interface.CommandContext(ctx, "true"), run: e.unmapImage}
	}
	return e.Interface.CommandContext(ctx, cmd, args...)
}

// Command implements exec.Interface.
func (e *Exec) Command(cmd string, args ...string) exec.Cmd {
	return e.CommandContext(context.Background(), cmd, args...)
}

func (e *Exec) mapImage(ctx context.Context, args []string) ([]byte, error) {
	// The mapping counts from the map call, where the kernel would map.
	started := time.Now()
	check := e.CheckArgs
	if check == nil {
		check = e.realMap
	}
	if err := check(ctx, args); err != nil {
		return []byte(err.Error()), err
	}
	h, err := e.Hold(args)
	if err != nil {
		return []byte(err.Error()), err
	}
	e.mu.Lock()
	e.holder, e.args, e.heldAt = h, args, started
	e.mu.Unlock()
	return nil, nil
}

// realMap runs the real "rbd map" with args and requires it to fail at the
// kernel step.
func (e *Exec) realMap(ctx context.Context, args []string) error {
	out, err := e.Interface.CommandContext(ctx, "rbd", args...).CombinedOutput()
	return ceph.CheckMapFailedAtKernel(out, err)
}

func (e *Exec) unmapImage() ([]byte, error) {
	e.mu.Lock()
	h := e.holder
	e.holder = nil
	e.mu.Unlock()
	switch {
	case h != nil && e.Release != nil:
		e.Release(h)
	case h != nil:
		h.Close()
	}
	return nil, nil
}

// Held returns the holder a map started and kept, if any, the map's
// arguments and when the map was called.
func (e *Exec) Held() (*ceph.Holder, []string, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.holder, e.args, e.heldAt
}

// cmdFunc is a command whose run is a function.
type cmdFunc struct {
	exec.Cmd
	run func() ([]byte, error)
}

func (c *cmdFunc) CombinedOutput() ([]byte, error) { return c.run() }
func (c *cmdFunc) Output() ([]byte, error)         { return c.run() }
func (c *cmdFunc) Run() error {
	_, err := c.run()
	return err
}
