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

package kubelet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInClientNSKillsTheGroupAtTheDeadline: a child the shell left running
// dies with it at the deadline, and the error says it was the deadline.
func TestInClientNSKillsTheGroupAtTheDeadline(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nsenter needs root")
	}
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := InClientNS(ctx, os.Getpid(), "sh", "-c", `sleep 300 & echo $! > "$1"; wait`, "sh", pidFile)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want the deadline", err)
	}
	data, readErr := os.ReadFile(pidFile)
	if readErr != nil {
		t.Fatal(readErr)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || child <= 0 {
		t.Fatalf("the shell's child pid %q: %v", data, err)
	}
	// Not our child: once killed, init reaps it and its /proc entry goes.
	for i := 0; i < 100 && syscall.Kill(child, 0) == nil && !exited(child); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(child, 0) == nil && !exited(child) {
		t.Errorf("the shell's child %d outlived the deadline", child)
	}
}

// TestInClientNSReturnsTheCommandsResult: without a deadline, the output
// and the exit status are the command's.
func TestInClientNSReturnsTheCommandsResult(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nsenter needs root")
	}
	out, err := InClientNS(context.Background(), os.Getpid(), "sh", "-c", "echo out; exit 3")
	if strings.TrimSpace(string(out)) != "out" {
		t.Errorf("output %q, want %q", out, "out")
	}
	var exitErr interface{ ExitCode() int }
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Errorf("error = %v, want exit status 3", err)
	}
}

// TestInClientNSKillsWhatTheCommandLeft: a member of the group that the
// command left running when it exited is killed too.
func TestInClientNSKillsWhatTheCommandLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nsenter needs root")
	}
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	out, err := InClientNS(context.Background(), os.Getpid(), "sh", "-c", `sleep 300 >/dev/null 2>&1 & echo $! > "$1"`, "sh", pidFile)
	if err != nil {
		t.Fatalf("InClientNS: %v (%s)", err, out)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || child <= 0 {
		t.Fatalf("the shell's child pid %q: %v", data, err)
	}
	for i := 0; i < 100 && syscall.Kill(child, 0) == nil && !exited(child); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(child, 0) == nil && !exited(child) {
		t.Errorf("the shell's child %d outlived the command", child)
	}
}
