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

package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSetRegistryKillsWhatAnAbortedRunLeft(t *testing.T) {
	dir := t.TempDir()
	registry := filepath.Join(dir, "running.pids")
	if err := SetRegistry(registry); err != nil {
		t.Fatal(err)
	}
	sleeper, err := Start("sleeper", dir, nil, "/bin/sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	defer sleeper.Kill()
	// A recorded pid that runs something else now must survive: this test.
	Record(os.Getpid(), "/bin/sleep")

	// The next run.
	before, _ := os.ReadFile(registry)
	if err := SetRegistry(registry); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !sleeper.Exited() {
		if time.Now().After(deadline) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sleeper.Pid()))
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleeper.Pid()))
			t.Fatalf("the leftover sleeper (pid %d) still runs: cmdline %q, stat %q, registry %q before the next run",
				sleeper.Pid(), cmdline, status, before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(os.Getpid(), 0); err != nil {
		t.Fatalf("this process: %v", err)
	}
	if data, _ := os.ReadFile(registry); len(data) != 0 {
		t.Errorf("the registry still lists %q", data)
	}
}

func TestWaitForGivesTheLogTail(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("failing", dir, nil, "/bin/sh", "-c", "echo cannot bind 127.0.0.1:1; exit 1")
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitFor(10*time.Second, func() error { return os.ErrNotExist })
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "cannot bind 127.0.0.1:1") {
		t.Fatalf("error = %v, want the exit and the log tail", err)
	}
}

func TestWaitForHasADeadline(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("hanging", dir, nil, "/bin/sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	start := time.Now()
	err = p.WaitFor(300*time.Millisecond, func() error { return os.ErrNotExist })
	if err == nil || !strings.Contains(err.Error(), "not ready after 300ms") {
		t.Fatalf("error = %v, want a timeout", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("WaitFor took %v", time.Since(start))
	}
}
