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

package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

// krbdClientScript is the node's Ceph client: one librados instance that
// serves the images mapped through it as files (krbd_client.py).
//
//go:embed krbd_client.py
var krbdClientScript []byte

// python is Debian's, which has python3-rbd and python3-llfuse.
const python = "/usr/bin/python3"

// rbdDeviceOptions are krbd's per-device map options. Every other option is
// libceph's: krbd shares a client only among maps whose libceph options
// are the same (and never with noshare).
var rbdDeviceOptions = map[string]bool{
	"ro": true, "read_only": true, "rw": true, "read_write": true, "queue_depth": true, "alloc_size": true,
	"lock_timeout": true, "lock_on_read": true, "exclusive": true, "notrim": true, "compression_hint": true,
	"rxbounce": true,
}

// clientKey names the client a map goes through: one per node, user,
// monitors, secret and libceph options, as krbd shares them; "" with
// noshare (a client of its own).
func clientKey(m mapArgs, secret []byte) string {
	var libceph []string
	for _, o := range strings.Split(m.options, ",") {
		name, _, _ := strings.Cut(o, "=")
		if name == "noshare" {
			return ""
		}
		if o != "" && !rbdDeviceOptions[name] {
			libceph = append(libceph, o)
		}
	}
	sort.Strings(libceph)
	h := sha256.New()
	for _, part := range []string{m.id, m.mon, strings.Join(libceph, ",")} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	h.Write(bytes.TrimSpace(secret))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// krbdClient is a running client of the node, as client.json records it.
type krbdClient struct {
	// Dir holds client.json and the FUSE mount (Dir/mnt).
	Dir string `json:"dir"`
	Pid int    `json:"pid"`
	// Socket is an abstract unix socket in the node's network namespace.
	Socket   string `json:"socket"`
	FuseConn uint32 `json:"fuseConn"`
	// Address is the client's, as a blocklist names it.
	Address string `json:"address"`
}

func (c *krbdClient) mount() string { return filepath.Join(c.Dir, "mnt") }

// lockClient takes the lock of the client named key: a map and an unmap
// through one client never overlap, so a client is never started twice nor
// stopped under a map. The lock goes with the returned file.
func lockClient(state, key string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Join(state, "clients"), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(state, "clients", key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readClient returns the client recorded in dir if it serves: its process
// runs, its mount is up and it answers. A client whose start was killed
// half-way, or that was killed, is discarded. One that runs but does not
// answer is an error while mappings go through it (it may be slow; ending
// it would fail them all), and is discarded when none but the one recorded
// in except does.
func readClient(state, dir, except string) (*krbdClient, bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, "client.json"))
	if err != nil {
		return nil, false, nil
	}
	var c krbdClient
	if json.Unmarshal(data, &c) != nil {
		_ = os.RemoveAll(dir)
		return nil, false, nil
	}
	if c.FuseConn == 0 || c.Address == "" || !clientRuns(c.Pid) || !mounted(c.mount()) {
		c.discard()
		return nil, false, nil
	}
	if _, err := c.request("client", 5*time.Second); err != nil {
		if othersThrough(state, dir, except) {
			return nil, false, fmt.Errorf("the krbd client %s (pid %d) does not answer: %w", c.Address, c.Pid, err)
		}
		c.discard()
		return nil, false, nil
	}
	return &c, true, nil
}

// discard ends a client that does not serve: its FUSE connection aborted
// (nothing waits on it any more), its process killed, its mount and
// directory gone.
func (c *krbdClient) discard() {
	if c.FuseConn != 0 {
		kubelet.AbortFuse(c.FuseConn)
	}
	if clientRuns(c.Pid) {
		_ = syscall.Kill(c.Pid, syscall.SIGKILL)
	}
	if mounted(c.mount()) {
		_ = exec.Command("umount", "-l", c.mount()).Run()
	}
	_ = os.RemoveAll(c.Dir)
	if strings.HasPrefix(filepath.Base(c.Dir), noshare) {
		_ = os.Remove(c.Dir + ".lock")
	}
}

// clientRuns reports whether pid is a krbd client (not a reused pid).
func clientRuns(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid > 0 && err == nil && process.Alive(pid) &&
		bytes.Contains(cmdline, []byte("/"+krbdClientFile+"\x00"))
}

// krbdClientFile is the script's name in the node's state directory.
const krbdClientFile = "krbd_client.py"

// startClient starts a client in dir with the map's credentials (keyfile
// or keyring) and returns once it answers on its socket: connected to the
// cluster, its FUSE mount up.
func startClient(state, dir string, m mapArgs, keyfile string) (*krbdClient, error) {
	script := filepath.Join(state, krbdClientFile)
	if old, err := os.ReadFile(script); err != nil || !bytes.Equal(old, krbdClientScript) {
		tmp := fmt.Sprintf("%s.%d.tmp", script, os.Getpid())
		if err := os.WriteFile(tmp, krbdClientScript, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, script); err != nil {
			return nil, err
		}
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "mnt"), 0o755); err != nil {
		return nil, err
	}
	credential := "keyfile=" + keyfile
	switch {
	case keyfile == "" && m.keyring == "":
		return nil, fmt.Errorf("rbd-shim: a map with neither a key nor a keyring")
	case keyfile == "":
		credential = "keyring=" + m.keyring
	}
	logFile, err := os.OpenFile(filepath.Join(state, "krbd-client.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	c := &krbdClient{Dir: dir, Socket: fmt.Sprintf("rbd-shim-%s-%d", filepath.Base(dir), time.Now().UnixNano())}
	cmd := exec.Command(python, script, c.mount(), c.Socket, m.id, m.mon, credential)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: it outlives this call and the kubelet's deadline.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the krbd client (%s): %w", python, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.Pid = cmd.Process.Pid
	// Recorded at once: if this call is killed, teardown still finds it.
	if err := c.save(); err != nil {
		c.discard()
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := c.request("client", 5*time.Second); err == nil {
			break
		}
		select {
		case <-exited:
			c.discard()
			return nil, fmt.Errorf("the krbd client exited before it served (log %s)", logFile.Name())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.discard()
			return nil, fmt.Errorf("the krbd client did not serve within 30 s (log %s)", logFile.Name())
		}
	}
	// Read from the mount table: a stat of the mount would be a FUSE request.
	conn, err := fuseConnection(c.mount())
	if err == nil {
		c.FuseConn = conn
		_, c.Address, err = c.clientID()
	}
	if err == nil {
		err = c.save()
	}
	if err != nil {
		c.discard()
		return nil, err
	}
	return c, nil
}

func (c *krbdClient) save() error {
	data, _ := json.Marshal(c)
	tmp := filepath.Join(c.Dir, "client.json.tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.Dir, "client.json"))
}

// request sends one request to the client and returns its answer after
// "ok"; an "err" answer, no answer within timeout, or no client is an error.
func (c *krbdClient) request(req string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("unix", "@"+c.Socket, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte(req + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("krbd client, %q: no answer: %w", req, err)
	}
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "ok"); ok {
		return strings.TrimSpace(rest), nil
	}
	return "", fmt.Errorf("krbd client, %q: %s", req, line)
}

// clientID returns the client's id and its address as a blocklist names
// it ("IP:0/NONCE", what rbd status and krbd's client_addr show).
func (c *krbdClient) clientID() (uint64, string, error) {
	answer, err := c.request("client", 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	idText, addrs, _ := strings.Cut(answer, " ")
	id, err := strconv.ParseUint(idText, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("krbd client: id %q: %w", idText, err)
	}
	addr, err := legacyAddress(addrs)
	return id, addr, err
}

var addrPattern = regexp.MustCompile(`(?:v[12]:)?([0-9.]+|\[[0-9a-f:]+\]):[0-9]+/([0-9]+)`)

// legacyAddress turns librados' address vector ("[v2:IP:0/N,v1:IP:0/N]"
// or "IP:0/N") into the "IP:0/N" form.
func legacyAddress(addrs string) (string, error) {
	m := addrPattern.FindStringSubmatch(addrs)
	if m == nil {
		return "", fmt.Errorf("krbd client: cannot read the address %q", addrs)
	}
	return m[1] + ":0/" + m[2], nil
}

// stop ends a client none of whose mappings are left: its mount goes (its
// process ends with it), bounded as every step that waits on FUSE. The
// caller holds the client's lock.
func (c *krbdClient) stop(state string) error {
	mp := mapping{Address: c.Address, FuseConn: c.FuseConn}
	if mounted(c.mount()) {
		if err := boundedByFuse(state, mp, "umount", c.mount()); err != nil {
			return err
		}
	}
	for i := 0; i < 100 && clientRuns(c.Pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if clientRuns(c.Pid) {
		_ = syscall.Kill(c.Pid, syscall.SIGKILL)
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return err
	}
	if strings.HasPrefix(filepath.Base(c.Dir), noshare) {
		// No other map ever takes a noshare client's lock.
		_ = os.Remove(c.Dir + ".lock")
	}
	return nil
}

// noshare starts the names of the clients of one mapping each.
const noshare = "noshare-"
