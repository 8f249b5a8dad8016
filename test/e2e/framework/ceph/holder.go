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

package ceph

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// holderScript opens an image with librbd (python3-rbd) and keeps it open,
// and so watched, until its stdin closes: what a node's mapping does to the
// image, without a kernel. It prints "open <address> <client id>", then
// answers one line per command on stdin: "w OFFSET TEXT" writes TEXT at
// OFFSET and flushes ("ok", or "err <exception>"), "r OFFSET LENGTH" reads
// ("data <text>").
const holderScript = `
import sys, rados, rbd
conf, user, keyfile, pool, image = sys.argv[1:6]
cluster = rados.Rados(conffile=conf, rados_id=user, conf={"keyfile": keyfile})
cluster.connect(timeout=30)
ioctx = cluster.open_ioctx(pool)
img = rbd.Image(ioctx, image)
print("open", cluster.get_addrs(), cluster.get_instance_id(), flush=True)
for line in sys.stdin:
    op, off, arg = (line.rstrip("\n").split(" ", 2) + ["", ""])[:3]
    try:
        if op == "w":
            img.write(arg.encode(), int(off))
            img.flush()
            print("ok", flush=True)
        elif op == "r":
            data = img.read(int(off), int(arg)).rstrip(b"\0")
            print("data", data.decode(errors="replace"), flush=True)
    except Exception as e:
        print("err", type(e).__name__, str(e).replace("\n", " "), flush=True)
try:
    img.close()
    ioctx.close()
    cluster.shutdown()
except Exception:
    pass
`

// Holder is a librbd client that keeps an image open.
type Holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	// lines carries the holder's answers after its "open" line.
	lines chan string
	// done is closed once the holder's process has been waited for.
	done chan struct{}
	// Address and Client identify the holder's watch, as rbd status shows it.
	Address string
	Client  uint64
}

// HolderConfig says how a holder reaches the cluster.
type HolderConfig struct {
	// Conf is a ceph.conf naming the monitors (Cluster.ClientConf).
	Conf string
	// User (without "client.") and KeyFile, a file holding its cephx key.
	User, KeyFile string
	Pool          string
	// Log receives the holder's error output.
	Log string
	// OwnProcessGroup puts the holder in a process group of its own (so a
	// test can kill it alone); otherwise it shares its parent's, and dies
	// with it when the group is killed.
	OwnProcessGroup bool
}

// Hold starts a client that opens image as the cluster's user and returns
// once the image is open (its watch registered).
func (c *Cluster) Hold(image string) (*Holder, error) {
	keyFile, err := c.HolderKeyFile()
	if err != nil {
		return nil, err
	}
	return StartHolder(c.HolderConfig(keyFile), image)
}

// StartHolder starts a client that opens image and returns once the image is
// open (its watch registered).
func StartHolder(cfg HolderConfig, image string) (*Holder, error) {
	cmd := exec.Command("/usr/bin/python3", "-c", holderScript, cfg.Conf, cfg.User, cfg.KeyFile, cfg.Pool, image)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: cfg.OwnProcessGroup}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(cfg.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the librbd holder (python3-rbd): %w", err)
	}
	h := &Holder{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			h.lines <- s.Text()
		}
		close(h.lines)
		_ = cmd.Wait()
		logFile.Close()
		close(h.done)
	}()
	select {
	case l, ok := <-h.lines:
		f := strings.Fields(l)
		if !ok || len(f) != 3 || f[0] != "open" {
			h.Kill()
			return nil, fmt.Errorf("the librbd holder did not open %s (%q); see %s", image, l, cfg.Log)
		}
		h.Address = f[1]
		if h.Client, err = strconv.ParseUint(f[2], 10, 64); err != nil {
			h.Kill()
			return nil, fmt.Errorf("the librbd holder printed %q", l)
		}
		return h, nil
	case <-time.After(60 * time.Second):
		h.Kill()
		return nil, fmt.Errorf("the librbd holder did not open %s within 60 s", image)
	}
}

// Write writes text at offset through the holder's client and flushes it.
// It returns the client's error (a blocklisted client gets one), or an
// error after timeout if the client does not answer.
func (h *Holder) Write(offset int, text string, timeout time.Duration) error {
	answer, err := h.ask(fmt.Sprintf("w %d %s", offset, text), timeout)
	if err != nil {
		return err
	}
	if answer != "ok" {
		return fmt.Errorf("write at %d: %s", offset, answer)
	}
	return nil
}

// Read reads length bytes at offset through the holder's client.
func (h *Holder) Read(offset, length int, timeout time.Duration) (string, error) {
	answer, err := h.ask(fmt.Sprintf("r %d %d", offset, length), timeout)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(answer, "data ") {
		return "", fmt.Errorf("read at %d: %s", offset, answer)
	}
	return strings.TrimPrefix(answer, "data "), nil
}

func (h *Holder) ask(command string, timeout time.Duration) (string, error) {
	if _, err := io.WriteString(h.stdin, command+"\n"); err != nil {
		return "", fmt.Errorf("the librbd holder is gone: %w", err)
	}
	select {
	case answer, ok := <-h.lines:
		if !ok {
			return "", fmt.Errorf("the librbd holder exited")
		}
		return answer, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("the librbd holder did not answer %q within %v", command, timeout)
	}
}

// Freeze stops the holder's process (SIGSTOP), as a node that hangs: its
// watch expires while its client keeps its state. Thaw resumes it.
func (h *Holder) Freeze() error { return syscall.Kill(h.cmd.Process.Pid, syscall.SIGSTOP) }

// Thaw resumes a frozen holder.
func (h *Holder) Thaw() error { return syscall.Kill(h.cmd.Process.Pid, syscall.SIGCONT) }

// Pid is the holder's process id.
func (h *Holder) Pid() int { return h.cmd.Process.Pid }

// Kill ends the holder at once, as a node losing power: its watch stays
// until the OSD's watch timeout expires.
func (h *Holder) Kill() {
	select {
	case <-h.done:
		// Gone: its group id may belong to another process group by now.
		return
	default:
	}
	if h.cmd.SysProcAttr.Setpgid {
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	}
	_ = h.cmd.Process.Kill()
}

// Close closes the image cleanly, which removes the watch at once.
func (h *Holder) Close() {
	_ = h.stdin.Close()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		h.Kill()
	}
}

// CheckMapFailedAtKernel tells whether "rbd map" failed only where the
// kernel comes in (there is no rbd module here), after it accepted its
// arguments: the real rbd then validated the argument list.
// CheckNbdMapFailedAtKernel returns nil when rbd-nbd map failed only where
// the nbd kernel module is needed. rbd-nbd parses its arguments, connects to
// the cluster and opens the image before it looks for a free /dev/nbdN, so
// failing there proves the arguments, the key file and the image name.
func CheckNbdMapFailedAtKernel(out []byte, err error) error {
	s := strings.TrimSpace(string(out))
	if err == nil {
		return fmt.Errorf("rbd-nbd map succeeded without the nbd module: %s", s)
	}
	for _, kernelStep := range []string{"rbd-nbd: failed to find unused device", "rbd-nbd: failed to open device"} {
		if strings.Contains(s, kernelStep) {
			return nil
		}
	}
	return fmt.Errorf("rbd-nbd map failed before the nbd step: %w: %q", err, s)
}

func CheckMapFailedAtKernel(out []byte, err error) error {
	s := string(out)
	for _, refused := range []string{"unknown map option", "couldn't parse map options", "unrecognised option",
		"unrecognized option", "too many arguments"} {
		if strings.Contains(strings.ToLower(s), refused) {
			return fmt.Errorf("rbd refused the map arguments: %s", strings.TrimSpace(s))
		}
	}
	if err == nil {
		return fmt.Errorf("rbd map succeeded without a kernel module: %s", strings.TrimSpace(s))
	}
	if !strings.Contains(s, "rbd: map failed: ") {
		return fmt.Errorf("rbd map failed before the kernel step: %w: %s", err, strings.TrimSpace(s))
	}
	return nil
}
