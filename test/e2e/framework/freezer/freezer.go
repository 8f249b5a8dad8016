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

// Package freezer puts a test node's whole process tree in a cgroup of the
// v1 freezer hierarchy, so that the node stops at once, as a paused VM or a
// hung host does: every process of it, and nothing else.
package freezer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// root holds the groups of every suite; Remove and RemoveLeftovers empty it.
const root = "/sys/fs/cgroup/freezer/rbdf-e2e"

// Group is one node's cgroup.
type Group struct {
	// Path is the group's directory; a process joins it by writing its pid
	// to Path/cgroup.procs (its children follow).
	Path string
}

// New makes the group for node (a group an earlier test left goes first).
func New(node string) (*Group, error) {
	if _, err := os.Stat(filepath.Dir(root)); err != nil {
		return nil, fmt.Errorf("no cgroup v1 freezer hierarchy at %s (a host with the unified hierarchy alone needs "+
			"systemd.unified_cgroup_hierarchy=0): %w", filepath.Dir(root), err)
	}
	g := &Group{Path: filepath.Join(root, node)}
	g.Remove()
	if err := os.MkdirAll(g.Path, 0o755); err != nil {
		return nil, fmt.Errorf("make freezer group %s: %w", g.Path, err)
	}
	return g, nil
}

// Procs is the group's cgroup.procs file.
func (g *Group) Procs() string { return filepath.Join(g.Path, "cgroup.procs") }

// Freeze stops every process of the group and returns once the kernel says
// all are stopped.
func (g *Group) Freeze(timeout time.Duration) error {
	return g.set("FROZEN", timeout)
}

// Thaw lets them run again.
func (g *Group) Thaw(timeout time.Duration) error {
	return g.set("THAWED", timeout)
}

func (g *Group) set(state string, timeout time.Duration) error {
	file := filepath.Join(g.Path, "freezer.state")
	if err := os.WriteFile(file, []byte(state), 0o644); err != nil {
		return fmt.Errorf("set %s to %s: %w", file, state, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		got, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(got)) == state {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s reads %s %v after it was set to %s (a process stuck in the kernel?); pids %v",
				file, strings.TrimSpace(string(got)), timeout, state, g.Pids())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Pids lists the group's processes.
func (g *Group) Pids() []int {
	data, err := os.ReadFile(g.Procs())
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Remove kills every process of the group, thaws it so the kills land, and
// removes it.
func (g *Group) Remove() {
	if _, err := os.Stat(g.Path); err != nil {
		return
	}
	for i := 0; i < 50; i++ {
		pids := g.Pids()
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// A frozen process dies only once it runs again.
		_ = os.WriteFile(filepath.Join(g.Path, "freezer.state"), []byte("THAWED"), 0o644)
		time.Sleep(100 * time.Millisecond)
	}
	_ = os.Remove(g.Path)
}

// RemoveLeftovers removes every group an earlier run left.
func RemoveLeftovers() {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			(&Group{Path: filepath.Join(root, e.Name())}).Remove()
		}
	}
}
