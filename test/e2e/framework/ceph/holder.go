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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// holderScript opens an image with librbd (python3-rbd) and keeps it open,
// and so watched, until its stdin closes: what a node's mapping does to the
// image, without a kernel. It prints "open <address> <client id>".
const holderScript = `
import sys, rados, rbd
conf, user, keyfile, pool, image = sys.argv[1:6]
cluster = rados.Rados(conffile=conf, rados_id=user, conf={"keyfile": keyfile})
cluster.connect(timeout=30)
ioctx = cluster.open_ioctx(pool)
img = rbd.Image(ioctx, image)
print("open", cluster.get_addrs(), cluster.get_instance_id(), flush=True)
sys.stdin.read()
img.close()
ioctx.close()
cluster.shutdown()
`

// Holder is a librbd client that keeps an image open.
type Holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
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
	keyFile := filepath.Join(c.opts.Dir, "holder.key")
	if err := os.WriteFile(keyFile, []byte(c.UserKey), 0o600); err != nil {
		return nil, err
	}
	return StartHolder(HolderConfig{Conf: c.ClientConf, User: c.opts.User, KeyFile: keyFile, Pool: c.opts.Pool,
		Log: filepath.Join(c.opts.Dir, "log", "holder.out"), OwnProcessGroup: true}, image)
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
		return nil, fmt.Errorf("start the librbd holder (python3-rbd): %v", err)
	}
	h := &Holder{cmd: cmd, stdin: stdin}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		logFile.Close()
	}()
	select {
	case l, ok := <-line:
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

// Pid is the holder's process id.
func (h *Holder) Pid() int { return h.cmd.Process.Pid }

// Kill ends the holder at once, as a node losing power: its watch stays
// until the OSD's watch timeout expires.
func (h *Holder) Kill() {
	if h.cmd.SysProcAttr.Setpgid {
		_ = syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
	}
	_ = h.cmd.Process.Kill()
}

// Close closes the image cleanly, which removes the watch at once.
func (h *Holder) Close() {
	_ = h.stdin.Close()
	done := make(chan struct{})
	go func() {
		for syscall.Kill(h.cmd.Process.Pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.Kill()
	}
}
