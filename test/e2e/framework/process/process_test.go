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
	// A recorded pid that another process has taken since must survive:
	// this test, recorded with a start time that is not its own.
	started, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(registry, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%d %d /bin/sleep\n", os.Getpid(), started+1)
	f.Close()

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

func TestStartTimeReadsPastACommandNameWithParentheses(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(dir, "a) 1 2 (b")
	if err := os.WriteFile(odd, data, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Start("odd", dir, nil, odd, "300")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	got, err := StartTime(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	self, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The child started after this process, and not in the distant future.
	if got < self || got > self+uint64(3600*100) {
		t.Errorf("start time %d of the child, %d of this process", got, self)
	}
}
