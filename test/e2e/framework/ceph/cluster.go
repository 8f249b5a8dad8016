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

// Package ceph runs a throwaway single-node Ceph cluster on one address for
// end-to-end tests: one monitor, Options.OSDs memstore OSDs (one unless
// set; the e2e suites run three), cephx, one pool and a client user with
// the rbd profile. It uses Debian's ceph-mon, ceph-osd and ceph-common
// packages (installed by hack/install-deps.sh) and needs no kernel module.
package ceph

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

// Options configure a cluster.
type Options struct {
	// Dir holds the cluster's state, configuration and logs.
	Dir string
	// WatchTimeout is the OSDs' osd_client_watch_timeout; 0 keeps Ceph's 30 s.
	WatchTimeout time.Duration
	// Pool is the RBD pool to create.
	Pool string
	// User is the cephx user (without "client.") the tests map images as.
	User string
	// Address is where the daemons listen; "" is 127.0.0.1.
	Address string
	// OSDs is how many OSDs to run (memstore, each its own daemon; the
	// pool keeps one copy of each object, so objects spread over them);
	// 0 is 1.
	OSDs int
}

// Cluster is a running cluster.
type Cluster struct {
	opts Options
	// Monitor is the monitor's address, host:port.
	Monitor string
	// AdminConf is a ceph.conf with the admin keyring, for the harness.
	AdminConf string
	// ClientConf is a ceph.conf for librbd clients that stand in for node
	// mappings (no keyring: they are given the user's key).
	ClientConf string
	// UserKey is the cephx key of Options.User.
	UserKey string

	mon  *exec.Cmd
	osds []*exec.Cmd
}

// pidFile records the daemons so a later run can clean up after an aborted one.
func (c *Cluster) pidFile() string { return filepath.Join(c.opts.Dir, "daemons.pid") }

// Start creates and starts a cluster in opts.Dir, cleaning up what an earlier
// aborted run left there. Every step has a deadline.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	for _, bin := range []string{"ceph-mon", "ceph-osd", "ceph", "rbd", "ceph-authtool", "monmaptool"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: install Debian's ceph-mon, ceph-osd and ceph-common (hack/install-deps.sh)", bin)
		}
	}
	if opts.Pool == "" {
		opts.Pool = "rbd"
	}
	if opts.User == "" {
		opts.User = "kube"
	}
	if opts.OSDs <= 0 {
		opts.OSDs = 1
	}
	c := &Cluster{opts: opts}
	c.killLeftovers()
	if err := os.RemoveAll(opts.Dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"mon", "osd", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	port, err := process.FreePort()
	if err != nil {
		return nil, err
	}
	if opts.Address == "" {
		opts.Address = "127.0.0.1"
	}
	c.opts.Address = opts.Address
	c.Monitor = net.JoinHostPort(opts.Address, strconv.Itoa(port))
	fsid, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	if err != nil {
		return nil, err
	}
	c.AdminConf = filepath.Join(opts.Dir, "ceph.conf")
	c.ClientConf = filepath.Join(opts.Dir, "client.conf")
	if err := os.WriteFile(c.AdminConf, []byte(c.config(strings.TrimSpace(string(fsid)))), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.ClientConf, []byte(c.clientConfig()), 0o600); err != nil {
		return nil, err
	}

	d := opts.Dir
	steps := [][]string{
		{"ceph-authtool", "--create-keyring", d + "/mon.a.keyring", "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"},
		{"ceph-authtool", "--create-keyring", d + "/client.admin.keyring", "--gen-key", "-n", "client.admin",
			"--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"},
		{"ceph-authtool", d + "/mon.a.keyring", "--import-keyring", d + "/client.admin.keyring"},
		{"monmaptool", "--create", "--addv", "a", "[v2:" + c.Monitor + "]", "--fsid", strings.TrimSpace(string(fsid)), d + "/monmap"},
		{"ceph-mon", "--mkfs", "-i", "a", "--monmap", d + "/monmap", "--keyring", d + "/mon.a.keyring"},
	}
	for _, s := range steps {
		if _, err := c.run(ctx, 30*time.Second, s...); err != nil {
			return nil, err
		}
	}
	if err := c.StartMonitor(); err != nil {
		return nil, err
	}
	for i := 0; i < opts.OSDs; i++ {
		if err := c.createOSD(ctx, i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.waitOSDUp(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	for _, s := range [][]string{
		{"ceph", "osd", "pool", "create", opts.Pool, "8"},
		{"ceph", "osd", "pool", "application", "enable", opts.Pool, "rbd"},
	} {
		if _, err := c.run(ctx, 60*time.Second, s...); err != nil {
			c.Stop()
			return nil, err
		}
	}
	out, err := c.run(ctx, 30*time.Second, "ceph", "auth", "get-or-create-key", "client."+opts.User,
		"mon", "profile rbd", "osd", "profile rbd pool="+opts.Pool)
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.UserKey = strings.TrimSpace(string(out))
	return c, nil
}

// createOSD makes OSD id and starts it.
func (c *Cluster) createOSD(ctx context.Context, id int) error {
	osdUUID, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	if err != nil {
		return err
	}
	dir := filepath.Join(c.opts.Dir, "osd", strconv.Itoa(id))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	name := "osd." + strconv.Itoa(id)
	for _, s := range [][]string{
		{"ceph", "osd", "new", strings.TrimSpace(string(osdUUID)), strconv.Itoa(id)},
		{"ceph-osd", "-i", strconv.Itoa(id), "--mkfs", "--mkkey", "--osd-uuid", strings.TrimSpace(string(osdUUID)), "--no-mon-config"},
		{"ceph", "auth", "add", name, "osd", "allow *", "mon", "allow profile osd", "-i", filepath.Join(dir, "keyring")},
	} {
		if _, err := c.run(ctx, 60*time.Second, s...); err != nil {
			return err
		}
	}
	osd, err := c.daemon(name, "ceph-osd", "-f", "-i", strconv.Itoa(id))
	if err != nil {
		return err
	}
	c.osds = append(c.osds, osd)
	c.savePids()
	return nil
}

// OSDs is how many OSDs the cluster runs.
func (c *Cluster) OSDs() int { return len(c.osds) }

// FreezeOSD stops OSD id where it is (SIGSTOP): it neither serves nor
// takes new maps, and its peers report it down only after the heartbeat
// grace (20 s).
func (c *Cluster) FreezeOSD(id int) error {
	return syscall.Kill(-c.osds[id].Process.Pid, syscall.SIGSTOP)
}

// ThawOSD lets a frozen OSD run again.
func (c *Cluster) ThawOSD(id int) error {
	return syscall.Kill(-c.osds[id].Process.Pid, syscall.SIGCONT)
}

// OSDMapEpoch is the monitors' current OSD map epoch.
func (c *Cluster) OSDMapEpoch(ctx context.Context) (int, error) {
	out, err := c.run(ctx, 15*time.Second, "ceph", "osd", "dump", "--format=json")
	if err != nil {
		return 0, err
	}
	var dump struct {
		Epoch int `json:"epoch"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		return 0, fmt.Errorf("ceph osd dump: %w", err)
	}
	return dump.Epoch, nil
}

// OSDEpoch is the newest OSD map OSD id has, as it says itself.
func (c *Cluster) OSDEpoch(ctx context.Context, id int, timeout time.Duration) (int, error) {
	out, err := c.run(ctx, timeout, "ceph", "tell", "osd."+strconv.Itoa(id), "status", "--format=json")
	if err != nil {
		return 0, err
	}
	var st struct {
		NewestMap int `json:"newest_map"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return 0, fmt.Errorf("ceph tell osd.%d status: %w", id, err)
	}
	return st.NewestMap, nil
}

// ObjectOSD is the OSD that serves object of the pool (its acting primary).
func (c *Cluster) ObjectOSD(ctx context.Context, object string) (int, error) {
	out, err := c.run(ctx, 15*time.Second, "ceph", "osd", "map", c.opts.Pool, object, "--format=json")
	if err != nil {
		return 0, err
	}
	var m struct {
		Primary int `json:"acting_primary"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return 0, fmt.Errorf("ceph osd map: %w", err)
	}
	return m.Primary, nil
}

// ImageObjectPrefix is the prefix of image's data objects ("rbd_data.<id>").
func (c *Cluster) ImageObjectPrefix(ctx context.Context, image string) (string, error) {
	out, err := c.run(ctx, 15*time.Second, "rbd", "info", c.opts.Pool+"/"+image, "--format=json")
	if err != nil {
		return "", err
	}
	var info struct {
		Prefix string `json:"block_name_prefix"`
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Prefix == "" {
		return "", fmt.Errorf("rbd info %s: no block_name_prefix (%v)", image, err)
	}
	return info.Prefix, nil
}

// Blocklist blocklists addr, as a fencing node does.
func (c *Cluster) Blocklist(ctx context.Context, addr string) error {
	_, err := c.run(ctx, 30*time.Second, "ceph", "osd", "blocklist", "add", addr)
	return err
}

func (c *Cluster) config(fsid string) string {
	d := c.opts.Dir
	watch := ""
	if c.opts.WatchTimeout > 0 {
		watch = fmt.Sprintf("osd client watch timeout = %d\n", int(c.opts.WatchTimeout/time.Second))
	}
	return fmt.Sprintf(`[global]
fsid = %[1]s
mon host = [v2:%[2]s]
public addr = %[5]s
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mon data avail crit = 0
mon mgr mkfs grace = 86400
osd objectstore = memstore
memstore device bytes = 268435456
osd fast shutdown = false
run dir = %[3]s/run
log file = %[3]s/log/$name.log
pid file = %[3]s/run/$name.pid
admin socket = %[3]s/run/$name.asok
keyring = %[3]s/$name.keyring
[mon.a]
mon data = %[3]s/mon
[osd]
osd data = %[3]s/osd/$id
keyring = %[3]s/osd/$id/keyring
%[4]s[client]
admin socket =
log file = %[3]s/log/client.log
objecter tick interval = 1
`, fsid, c.Monitor, d, watch, c.opts.Address)
}

// clientConfig is for librbd clients that stand in for node mappings: a
// 1 s objecter tick keeps their watch alive with a lowered watch timeout.
func (c *Cluster) clientConfig() string {
	return fmt.Sprintf(`[global]
mon host = [v2:%s]
[client]
admin socket =
log file = %s/log/holder.log
objecter tick interval = 1
`, c.Monitor, c.opts.Dir)
}

// run runs an admin command with a deadline and returns its stdout.
func (c *Cluster) run(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "CEPH_CONF="+c.AdminConf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// daemon starts a Ceph daemon in the foreground, in its own process group,
// with its output in log/<name>.out.
func (c *Cluster) daemon(name string, args ...string) (*exec.Cmd, error) {
	out, err := os.OpenFile(filepath.Join(c.opts.Dir, "log", name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "CEPH_CONF="+c.AdminConf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	process.Record(cmd.Process.Pid, args[0])
	go func() { _ = cmd.Wait(); out.Close() }()
	return cmd, nil
}

// StartMonitor starts the monitor and waits until it answers.
func (c *Cluster) StartMonitor() error {
	var err error
	if c.mon, err = c.daemon("mon", "ceph-mon", "-f", "-i", "a"); err != nil {
		return err
	}
	c.savePids()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = c.run(ctx, 5*time.Second, "ceph", "mon", "stat", "--connect-timeout", "3")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("monitor did not answer within 30 s: %w\n%s", err, c.LogTail("mon.a.log", 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StopMonitor stops the monitor (the cluster keeps its state).
func (c *Cluster) StopMonitor() {
	stop(c.mon)
	c.mon = nil
}

func (c *Cluster) waitOSDUp(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		out, err := c.run(ctx, 10*time.Second, "ceph", "osd", "stat", "--format", "json")
		if err == nil {
			var st struct {
				NumUpOSDs int `json:"num_up_osds"`
			}
			if json.Unmarshal(out, &st) == nil && st.NumUpOSDs == c.opts.OSDs {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("the OSDs did not come up within %v\n%s", timeout, c.LogTail("osd.0.log", 20))
}

// CreateImage creates an RBD image of sizeMiB in the pool with only the
// layering feature, as the in-tree provisioner makes them: no exclusive
// lock, so nothing but the plugin's fence stops a stale writer.
func (c *Cluster) CreateImage(ctx context.Context, name string, sizeMiB int) error {
	_, err := c.run(ctx, 60*time.Second, "rbd", "create", c.opts.Pool+"/"+name, "--size", strconv.Itoa(sizeMiB),
		"--image-feature", "layering")
	return err
}

// CopyImage copies src to dst with "rbd cp", as an operator makes a copy of
// an image: the copy has its metadata too.
func (c *Cluster) CopyImage(ctx context.Context, src, dst string) error {
	_, err := c.run(ctx, 120*time.Second, "rbd", "cp", c.opts.Pool+"/"+src, c.opts.Pool+"/"+dst)
	return err
}

// ImageMeta returns the image's metadata as the admin sees it.
func (c *Cluster) ImageMeta(ctx context.Context, image string) (map[string]string, error) {
	out, err := c.run(ctx, 15*time.Second, "rbd", "image-meta", "list", c.opts.Pool+"/"+image, "--format", "json")
	if err != nil {
		return nil, err
	}
	meta := map[string]string{}
	if len(bytes.TrimSpace(out)) == 0 {
		return meta, nil
	}
	if err := json.Unmarshal(out, &meta); err != nil {
		return nil, fmt.Errorf("cannot read rbd image-meta list %q: %w", out, err)
	}
	return meta, nil
}

// Blocklisted reports whether addr is on the OSD map's blocklist.
func (c *Cluster) Blocklisted(ctx context.Context, addr string) (bool, error) {
	out, err := c.run(ctx, 15*time.Second, "ceph", "osd", "blocklist", "ls")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == addr {
			return true, nil
		}
	}
	return false, nil
}

// blocklistEntry is one entry of "ceph osd blocklist ls".
type blocklistEntry struct {
	Addr  string `json:"addr"`
	Until string `json:"until"`
}

// blocklist returns the OSD map's blocklist. Pacific prints two JSON lists
// one after the other: the addresses, then the address ranges.
func (c *Cluster) blocklist(ctx context.Context) ([]blocklistEntry, error) {
	out, err := c.run(ctx, 15*time.Second, "ceph", "osd", "blocklist", "ls", "--format=json")
	if err != nil {
		return nil, err
	}
	var all []blocklistEntry
	d := json.NewDecoder(bytes.NewReader(out))
	for {
		var entries []blocklistEntry
		err := d.Decode(&entries)
		if err == io.EOF {
			return all, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read ceph osd blocklist ls %q: %w", out, err)
		}
		all = append(all, entries...)
	}
}

// BlocklistedAddresses returns every address on the blocklist.
func (c *Cluster) BlocklistedAddresses(ctx context.Context) (map[string]bool, error) {
	entries, err := c.blocklist(ctx)
	if err != nil {
		return nil, err
	}
	addrs := map[string]bool{}
	for _, e := range entries {
		addrs[e.Addr] = true
	}
	return addrs, nil
}

// BlocklistExpiry returns when addr's blocklist entry expires (false if it
// has none), from "ceph osd blocklist ls".
func (c *Cluster) BlocklistExpiry(ctx context.Context, addr string) (time.Time, bool, error) {
	entries, err := c.blocklist(ctx)
	if err != nil {
		return time.Time{}, false, err
	}
	for _, e := range entries {
		if e.Addr != addr {
			continue
		}
		// Ceph writes utime_t as 2026-12-02T18:00:00.123456+0000.
		until, err := time.Parse("2006-01-02T15:04:05.999999-0700", e.Until)
		if err != nil {
			return time.Time{}, true, fmt.Errorf("blocklist entry of %s: expiry %q: %w", addr, e.Until, err)
		}
		return until, true, nil
	}
	return time.Time{}, false, nil
}

// CreateUser makes the cephx user client.name with caps (pairs of service
// and capability) and returns its key.
func (c *Cluster) CreateUser(ctx context.Context, name string, caps ...string) (string, error) {
	out, err := c.run(ctx, 30*time.Second, append([]string{"ceph", "auth", "get-or-create-key", "client." + name}, caps...)...)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// SetImageMeta sets one metadata key of an image, as the admin.
func (c *Cluster) SetImageMeta(ctx context.Context, image, key, value string) error {
	_, err := c.run(ctx, 15*time.Second, "rbd", "image-meta", "set", c.opts.Pool+"/"+image, key, value)
	return err
}

// HolderKeyFile writes the cluster user's key to a file for librbd clients.
func (c *Cluster) HolderKeyFile() (string, error) {
	keyFile := filepath.Join(c.opts.Dir, "holder.key")
	return keyFile, os.WriteFile(keyFile, []byte(c.UserKey), 0o600)
}

// HolderConfig is how a librbd client stands in for a mapping of the
// cluster's user.
func (c *Cluster) HolderConfig(keyFile string) HolderConfig {
	return HolderConfig{Conf: c.ClientConf, User: c.opts.User, KeyFile: keyFile, Pool: c.opts.Pool,
		Log: filepath.Join(c.opts.Dir, "log", "holder.out"), OwnProcessGroup: true}
}

// Watcher is a client watching an image, as rbd status reports it.
type Watcher struct {
	Address string `json:"address"`
	Client  uint64 `json:"client"`
}

// Watchers returns the image's watchers as the admin sees them.
func (c *Cluster) Watchers(ctx context.Context, image string) ([]Watcher, error) {
	out, err := c.run(ctx, 15*time.Second, "rbd", "status", c.opts.Pool+"/"+image, "--format", "json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Watchers *[]Watcher `json:"watchers"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Watchers == nil {
		return nil, fmt.Errorf("cannot read rbd status %q: %w", out, err)
	}
	return *st.Watchers, nil
}

// LogTail returns the last n lines of a log file of the cluster.
func (c *Cluster) LogTail(name string, n int) string {
	data, _ := os.ReadFile(filepath.Join(c.opts.Dir, "log", name))
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop stops the daemons. The directory (with the logs) stays.
func (c *Cluster) Stop() {
	for _, osd := range c.osds {
		stop(osd)
	}
	stop(c.mon)
	c.osds, c.mon = nil, nil
	_ = os.Remove(c.pidFile())
}

func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for cmd.ProcessState == nil && syscall.Kill(cmd.Process.Pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (c *Cluster) savePids() {
	var pids []string
	for _, cmd := range append([]*exec.Cmd{c.mon}, c.osds...) {
		if cmd != nil && cmd.Process != nil {
			pids = append(pids, strconv.Itoa(cmd.Process.Pid))
		}
	}
	_ = os.WriteFile(c.pidFile(), []byte(strings.Join(pids, "\n")+"\n"), 0o600)
}

// killLeftovers stops daemons an aborted earlier run left in this directory.
func (c *Cluster) killLeftovers() {
	data, err := os.ReadFile(c.pidFile())
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.HasPrefix(strings.TrimSpace(string(comm)), "ceph-") {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
