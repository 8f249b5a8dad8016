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

// Package process starts the end-to-end harness's daemons (etcd,
// kube-apiserver, kube-controller-manager, kubelets): each in its own
// process group with its output in a log file, recorded so that a later run
// can kill what an aborted run left behind.
package process

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a running daemon.
type Process struct {
	Name string
	// Log is the file that holds its stdout and stderr.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// registry is the file listing the pids of running daemons, shared by runs.
var (
	registryMu sync.Mutex
	registry   string
)

// SetRegistry names the file that records running daemons and kills every
// daemon an earlier run recorded there and left running.
func SetRegistry(path string) error {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry = path
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		// The pid may have been reused since; the start time tells. The
		// command line does not: it reads empty for a moment after exec.
		if started, err := StartTime(pid); err == nil && strconv.FormatUint(started, 10) == f[1] {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, nil, 0o644)
}

// StartTime is when pid started, in clock ticks after boot (proc(5) stat
// field 22): with the pid it names one process for as long as the system runs.
func StartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name in %q", pid, data)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want at least 20", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Alive reports whether pid runs: a zombie (a process that ended and that
// nobody reaped, such as a daemon whose parent is gone) does not.
func Alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && !bytes.HasPrefix(stat[i+1:], []byte(" Z"))
}

// Record adds a daemon started elsewhere (the Ceph daemons) to the registry.
func Record(pid int, bin string) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if registry == "" {
		return
	}
	started, err := StartTime(pid)
	if err != nil {
		return
	}
	f, err := os.OpenFile(registry, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%d %d %s\n", pid, started, bin)
}

// Start runs argv in its own process group with env added to the harness's
// environment and its output appended to logDir/name.log.
func Start(name, logDir string, env []string, argv ...string) (*Process, error) {
	return StartIn("", name, logDir, env, argv...)
}

// StartIn is Start with dir as the working directory ("" for the harness's).
func StartIn(dir, name, logDir string, env []string, argv ...string) (*Process, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, argv[0], err)
	}
	Record(cmd.Process.Pid, argv[0])
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id, also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process alone.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// SignalGroup sends sig to the process's whole process group.
func (p *Process) SignalGroup(sig syscall.Signal) error { return syscall.Kill(-p.Pid(), sig) }

// Kill ends the whole process group at once, as a power cut would, and
// waits until the process is gone.
func (p *Process) Kill() {
	// Once it is gone its group id may belong to another process group.
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// Stop asks the process to end (SIGTERM), kills its group after grace, and
// kills what is left of its group either way.
func (p *Process) Stop(grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
	}
	p.Kill()
}

// LogTail returns the last n lines of the log.
func (p *Process) LogTail(n int) string {
	data, err := os.ReadFile(p.Log)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.Log, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor polls ready every 100 ms until it returns nil, the process exits
// or timeout passes; the error then carries the last failure and the log's
// tail.
func (p *Process) WaitFor(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited before it was ready (%w); last lines of %s:\n%s", p.Name, err, p.Log, p.LogTail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (%w); last lines of %s:\n%s", p.Name, timeout, err, p.Log, p.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
