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

// Package kubelet runs a test node: the real, unmodified kubelet binary,
// configured only through upstream's flags and config file, with upstream's
// fake container runtime (pods without containers, volumes for real), in a
// network namespace of its own (framework/netns), a mount namespace of its
// own whose /sys/bus is a tmpfs, and a freezer cgroup that holds every
// process of the node (framework/freezer). The mount namespace belongs to
// the node, not to its kubelet: a process that does nothing holds it, and
// the kubelet joins it, so a restarted kubelet finds the mounts and
// devices its predecessor made, as on a host. test/e2e/cmd/rbd-shim is the
// "rbd" on its PATH, so that "rbd map" gives the node a real block device
// backed by a librbd client, which runs in the node's namespaces and cgroup.
package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/calllog"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/freezer"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/netns"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

// Options say which binaries a node runs and where it keeps its files.
type Options struct {
	// Kubelet, FakeCRI and RbdShim are the binaries.
	Kubelet, FakeCRI, RbdShim string
	// Kubeconfig is the node's credentials for the API server.
	Kubeconfig string
	// Dir holds the node's directories; LogDir its logs.
	Dir, LogDir string
	// Env is added to the kubelet's environment (CEPH_CONF).
	Env []string
	// Hub is the network the node joins; the suite runs inside it.
	Hub *netns.Hub
	// NodeMonitorGracePeriod is the controller's: the kubelet's lease lasts
	// that long and it posts its status four times in it, the ratio of
	// upstream's defaults (a 40 s lease, status every 10 s, 40 s grace).
	NodeMonitorGracePeriod time.Duration
}

// Node is a running test node.
type Node struct {
	Name string
	// Root is the kubelet's --root-dir.
	Root string
	// Net is the node's network namespace; Cgroup holds its processes.
	Net    *netns.Node
	Cgroup *freezer.Group
	opts   Options
	dir    string
	cri    *process.Process
	// mounts holds the node's mount namespace: it outlives kubelet restarts.
	mounts *process.Process
	// poweredOff: PowerOff killed the kubelet (it dies once thawed); the
	// suites' monitors read it.
	poweredOff atomic.Bool
	// kubelet is the kubelet process; RestartKubelet replaces it while the
	// suites' monitors read it.
	kubelet atomic.Pointer[process.Process]
}

// config is the KubeletConfiguration: upstream defaults except what this
// VM needs (no swap check, no QoS cgroups, no allocatable enforcement),
// what a second kubelet on one host must not share (ports, endpoints) and
// the heartbeat, scaled to the controller's grace period.
const config = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%[1]s/cri.sock
imageServiceEndpoint: unix://%[1]s/cri.sock
address: %[4]s
port: %[2]d
healthzBindAddress: 127.0.0.1
healthzPort: %[3]d
readOnlyPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
nodeLeaseDurationSeconds: %[5]d
nodeStatusUpdateFrequency: %[6]s
`

// Start starts a node named name.
func Start(ctx context.Context, name string, o Options) (*Node, error) {
	n := &Node{Name: name, opts: o, dir: filepath.Join(o.Dir, name)}
	n.Root = filepath.Join(n.dir, "root")
	for _, d := range []string{n.Root, n.bin(), n.state()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The shim is rbd, ceph, and the tools that open a device (it logs the
	// node's calls of each: the suite's verdict comes from that log).
	for _, tool := range ShimTools {
		_ = os.Remove(filepath.Join(n.bin(), tool))
		if err := os.Symlink(o.RbdShim, filepath.Join(n.bin(), tool)); err != nil {
			return nil, err
		}
	}
	// No kernel modules and no rbd-nbd fallback on a test node, even on a
	// host that has them: every mapping goes through the shim.
	for _, stub := range []string{"modprobe", "rbd-nbd"} {
		if err := os.WriteFile(filepath.Join(n.bin(), stub), []byte("#!/bin/sh\necho \"$0: not on a test node\" >&2\nexit 1\n"), 0o755); err != nil {
			return nil, err
		}
	}
	if o.Hub == nil {
		return nil, fmt.Errorf("node %s: no hub network (run the suite through netns.RunInHub)", name)
	}
	var err error
	if n.Net, err = o.Hub.AddNode(name); err != nil {
		return nil, err
	}
	if n.Cgroup, err = freezer.New(name); err != nil {
		n.Net.Remove()
		return nil, err
	}
	// Every process of the node runs in the node's directory (nothing it
	// does with a relative path lands in the harness's package directory),
	// in its network namespace and in its cgroup.
	n.cri, err = process.StartIn(n.dir, "fake-cri-"+name, o.LogDir, nil,
		n.enter(o.FakeCRI, "--endpoint=unix://"+n.dir+"/cri.sock")...)
	if err != nil {
		n.Net.Remove()
		n.Cgroup.Remove()
		return nil, err
	}
	sock := filepath.Join(n.dir, "cri.sock")
	if err := n.cri.WaitFor(30*time.Second, func() error {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		n.Stop()
		return nil, err
	}
	if err := n.startMountNamespace(); err != nil {
		n.Stop()
		return nil, err
	}
	if err := n.StartKubelet(ctx); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

// startMountNamespace starts the process that holds the node's mount
// namespace: a tmpfs at /sys/bus, where the shim makes the node's
// /sys/bus/rbd/devices entries, and a directory per node for the paths
// the kubelet hard-codes (its device plugin socket, the pods' logs).
func (n *Node) startMountNamespace() error {
	ready := filepath.Join(n.dir, "mounts-ready")
	_ = os.Remove(ready)
	script := `set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /sys/bus && mkdir -p /sys/bus/rbd/devices
for d in /var/lib/kubelet/device-plugins /var/log/pods /var/log/containers; do
  mkdir -p "$d" "$NODE_DIR/host$d" && mount --bind "$NODE_DIR/host$d" "$d"
done
touch "$NODE_DIR/mounts-ready"
exec sleep infinity`
	var err error
	n.mounts, err = process.StartIn(n.dir, "mounts-"+n.Name, n.opts.LogDir, []string{"NODE_DIR=" + n.dir},
		n.enter("unshare", "--mount", "--", "sh", "-c", script)...)
	if err != nil {
		return err
	}
	return n.mounts.WaitFor(30*time.Second, func() error {
		_, err := os.Stat(ready)
		return err
	})
}

// enter is argv run in the node's network namespace and cgroup.
func (n *Node) enter(argv ...string) []string {
	join := append(n.Net.Enter(), "sh", "-c", `echo $$ > "$0" && exec "$@"`, n.Cgroup.Procs())
	return append(join, argv...)
}

func (n *Node) bin() string   { return filepath.Join(n.dir, "bin") }
func (n *Node) state() string { return filepath.Join(n.dir, "rbd-state") }

// StartKubelet starts the kubelet (again, after a kill) and waits for its
// health endpoint.
func (n *Node) StartKubelet(ctx context.Context) error {
	port, err := process.FreePort()
	if err != nil {
		return err
	}
	healthz, err := process.FreePort()
	if err != nil {
		return err
	}
	cfg := filepath.Join(n.dir, "kubelet.yaml")
	grace := n.opts.NodeMonitorGracePeriod
	if grace < 4*time.Second {
		return fmt.Errorf("node %s: node monitor grace period %v: want at least 4s", n.Name, grace)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(config, n.dir, port, healthz, n.Net.IP, int(grace/time.Second),
		grace/4)), 0o644); err != nil {
		return err
	}
	env := append([]string{
		"PATH=" + n.bin() + ":" + os.Getenv("PATH"),
		"RBD_SHIM_STATE=" + n.state(),
	}, n.opts.Env...)
	// Joining a mount namespace moves the working directory to its root,
	// and the kubelet removes what matches a removed container's log path
	// with "*" appended, relative to it: upstream's fake runtime gives no
	// log path, so from "/" that would be "/*" (it took /bin, the first
	// entry it could remove). An empty directory of the node's instead.
	wd := filepath.Join(n.dir, "kubelet-wd")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return err
	}
	kubelet, err := process.StartIn(n.dir, "kubelet-"+n.Name, n.opts.LogDir, env,
		n.enter("nsenter", "-t", strconv.Itoa(n.mounts.Pid()), "-m", "--wd="+wd, "--",
			n.opts.Kubelet, "--config="+cfg, "--kubeconfig="+n.opts.Kubeconfig, "--hostname-override="+n.Name,
			"--node-ip="+n.Net.IP.String(), "--root-dir="+n.Root, "--cert-dir="+filepath.Join(n.dir, "pki"), "--v=4")...)
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", healthz)
	n.kubelet.Store(kubelet)
	return kubelet.WaitFor(time.Minute, func() error {
		curl := append(n.Net.Enter(), "curl", "-sf", "--max-time", "2", url)
		out, err := exec.CommandContext(ctx, curl[0], curl[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w: %s", url, err, out)
		}
		return nil
	})
}

// RestartKubelet kills the kubelet alone (SIGKILL, with the rbd and ceph
// calls it has under way; the node's mounts and mappings stay) and starts
// it again, as a crash and a restart by the service manager would. It
// returns when the old kubelet was gone: every call after that is the new
// one's.
func (n *Node) RestartKubelet(ctx context.Context) (time.Time, error) {
	n.kubelet.Load().Kill()
	gone := time.Now()
	return gone, n.StartKubelet(ctx)
}

// RestartKubeletKillingHeldCall kills the kubelet and the call whose
// holder-record write waits in the shim (the kubelet runs each rbd call in
// a process group of its own; a service manager stopping the kubelet's
// cgroup kills them all), then starts the kubelet again. It returns when
// both were gone.
func (n *Node) RestartKubeletKillingHeldCall(ctx context.Context) (time.Time, error) {
	held := filepath.Join(n.state(), RecordHeldFile)
	data, err := os.ReadFile(held)
	if err != nil {
		return time.Time{}, fmt.Errorf("no held record write on %s: %w", n.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return time.Time{}, fmt.Errorf("%s: the shim's held call is %q", held, data)
	}
	n.kubelet.Load().Kill()
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; process.Alive(pid); i++ {
		if i == 100 {
			return time.Time{}, fmt.Errorf("the held call (pid %d) outlived SIGKILL by 10 s", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, f := range []string{held, filepath.Join(n.state(), HoldRecordFile)} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return time.Time{}, err
		}
	}
	gone := time.Now()
	return gone, n.StartKubelet(ctx)
}

// InNode runs argv in the node's mount namespace and returns its output.
func (n *Node) InNode(ctx context.Context, argv ...string) ([]byte, error) {
	return InClientNS(ctx, n.mounts.Pid(), argv...)
}

// MountNSPid is a pid in the node's mount namespace that lives as long as
// the node: unlike a Ceph client's, it does not go with an unmap.
func (n *Node) MountNSPid() int {
	return n.mounts.Pid()
}

// PodVolumeDir is where the kubelet mounts the pod's PersistentVolume.
func (n *Node) PodVolumeDir(podUID, pv string) string {
	return filepath.Join(n.Root, "pods", podUID, "volumes", "kubernetes.io~rbd", pv)
}

// Mounts returns the node's mounts of /dev/rbd* devices, as "device mountpoint".
func (n *Node) Mounts(ctx context.Context) ([]string, error) {
	out, err := n.InNode(ctx, "cat", "/proc/self/mounts")
	if err != nil {
		return nil, fmt.Errorf("read %s's mounts: %w: %s", n.Name, err, out)
	}
	var mounts []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[0], "/dev/rbd") {
			mounts = append(mounts, f[0]+" "+f[1])
		}
	}
	return mounts, nil
}

// MountIDs returns the node's mounts of /dev/rbd* devices as "id device
// mountpoint" (/proc/self/mountinfo): an unmount and a new mount of the
// same device at the same place get a new id.
func (n *Node) MountIDs(ctx context.Context) ([]string, error) {
	out, err := n.InNode(ctx, "cat", "/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read %s's mountinfo: %w: %s", n.Name, err, out)
	}
	var mounts []string
	for _, l := range strings.Split(string(out), "\n") {
		fields, tail, ok := strings.Cut(l, " - ")
		f, t := strings.Fields(fields), strings.Fields(tail)
		if ok && len(f) > 4 && len(t) > 1 && strings.HasPrefix(t[1], "/dev/rbd") {
			mounts = append(mounts, f[0]+" "+t[1]+" "+f[4])
		}
	}
	return mounts, nil
}

// FusePids returns the pids of the krbd clients behind the node's
// mappings: the node's Ceph clients, one per client however many
// mappings share it.
func (n *Node) FusePids() []int {
	var pids []int
	seen := map[int]bool{}
	records, _ := filepath.Glob(filepath.Join(n.state(), "rbd*.json"))
	for _, rec := range records {
		var mp struct {
			FusePid int `json:"fusePid"`
		}
		if data, err := os.ReadFile(rec); err == nil && json.Unmarshal(data, &mp) == nil && mp.FusePid > 0 && !seen[mp.FusePid] {
			seen[mp.FusePid] = true
			pids = append(pids, mp.FusePid)
		}
	}
	return pids
}

// PowerOff stops the node as a power cut would, as everyone else sees it:
// every process of the node is frozen at once (its Ceph clients keep their
// connections open and say nothing; their watches expire), its link goes
// down (nothing it sends arrives), and its kubelet and runtime are killed
// (they die when the node runs again). The Ceph clients stay frozen until
// WakeUp.
func (n *Node) PowerOff() error {
	if err := n.Cgroup.Freeze(10 * time.Second); err != nil {
		return err
	}
	if err := n.Net.LinkDown(); err != nil {
		return err
	}
	n.poweredOff.Store(true)
	for _, p := range []*process.Process{n.kubelet.Load(), n.cri} {
		if !p.Exited() {
			_ = p.SignalGroup(syscall.SIGKILL)
		}
	}
	return nil
}

// Freeze stops the node whole and cuts its link, but kills nothing: when
// it runs again its kubelet carries on with the call it was in (a paused
// VM).
func (n *Node) Freeze() error {
	if err := n.Cgroup.Freeze(10 * time.Second); err != nil {
		return err
	}
	return n.Net.LinkDown()
}

// HoldRecord makes the node's next holder-record write wait in the shim,
// after the map and before the record reaches Ceph, until ReleaseRecord.
func (n *Node) HoldRecord() error {
	return os.WriteFile(filepath.Join(n.state(), HoldRecordFile), nil, 0o644)
}

// RecordHeld reports whether a holder-record write waits in the shim.
func (n *Node) RecordHeld() bool {
	_, err := os.Stat(filepath.Join(n.state(), RecordHeldFile))
	return err == nil
}

// ReleaseRecord lets a held record write go on.
func (n *Node) ReleaseRecord() error {
	return os.Remove(filepath.Join(n.state(), HoldRecordFile))
}

// The shim's hold of a holder-record write: while HoldRecordFile is in its
// state directory, a record write writes its pid to RecordHeldFile and
// waits.
const (
	HoldRecordFile = "hold-record"
	RecordHeldFile = "record-held"
)

// WakeUp lets a node that was powered off (or frozen) run again, with its
// link back: what survived of it (its Ceph clients, with their mappings
// and the writes they queued) carries on where it stopped.
func (n *Node) WakeUp() error {
	if err := n.Net.LinkUp(); err != nil {
		return err
	}
	return n.Cgroup.Thaw(10 * time.Second)
}

// InClientNS runs argv in the mount namespace of pid (a node's Ceph client
// or its namespace holder, both still there after the kubelet is gone). Its whole process group is
// killed at ctx's deadline, and what is left of the group once the command
// has exited: a dd must not outlive the shell that ran it.
func InClientNS(ctx context.Context, pid int, argv ...string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	args := append([]string{"-t", strconv.Itoa(pid), "-m", "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A child stuck in the kernel (I/O to a fenced client) may keep the
	// output open after the command is killed.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Only the Wait below reaps the leader, so until then its pid (and its
	// group's id) cannot be another process's: the kills never hit a
	// stranger, as a kill from os/exec's Cancel racing Wait could.
	leader := cmd.Process.Pid
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var deadline error
	for deadline == nil && !exited(leader) {
		select {
		case <-ctx.Done():
			if !exited(leader) {
				deadline = ctx.Err()
			}
		case <-tick.C:
		}
	}
	_ = syscall.Kill(-leader, syscall.SIGKILL)
	err := cmd.Wait()
	if deadline != nil {
		return out.Bytes(), errors.Join(deadline, err)
	}
	return out.Bytes(), err
}

// exited reports whether the child pid has exited. It is not reaped yet
// (only InClientNS's Wait reaps it), so its /proc entry is there: a zombie
// once it exited. A read that fails otherwise says nothing: not exited.
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// Mapping is one of the node's mappings: the Ceph client behind a device.
type Mapping struct {
	Image   string `json:"image"`
	Client  uint64 `json:"client"`
	Address string `json:"address"`
}

// Mappings returns the node's mappings, as the shim recorded them.
func (n *Node) Mappings() []Mapping {
	var mps []Mapping
	records, _ := filepath.Glob(filepath.Join(n.state(), "rbd*.json"))
	for _, rec := range records {
		var mp Mapping
		if data, err := os.ReadFile(rec); err == nil && json.Unmarshal(data, &mp) == nil && mp.Client > 0 {
			mps = append(mps, mp)
		}
	}
	return mps
}

// ShimTools are the names the shim runs as on a node's PATH.
var ShimTools = []string{"rbd", "ceph", "mount", "umount", "fsck", "mkfs.ext4", "blkid"}

// CallLog returns the node's call log (package calllog): every call of
// the shim's tools with its start, end and status, every mapping.
func (n *Node) CallLog() ([]calllog.Entry, error) {
	return calllog.Read(filepath.Join(n.state(), calllog.FileName))
}

// Call is one rbd or ceph call the node's kubelet made (by its verbs, a
// blocklist with the address it fences), one use of an RBD device, or a
// note of the shim's: a line of the timeline.
type Call struct {
	At   time.Time
	What string
}

// Calls returns the node's calls, as the timeline draws them, in order of
// their start.
func (n *Node) Calls() ([]Call, error) {
	entries, err := n.CallLog()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	var out []Call
	for _, e := range entries {
		switch {
		case e.Kind == calllog.Note:
			out = append(out, Call{At: e.At, What: e.What})
		case e.Kind != calllog.Start:
		case e.Tool == "rbd" || e.Tool == "ceph":
			what := strings.TrimSpace(e.Tool + " " + e.Verbs)
			if e.Address != "" {
				what += " " + e.Address
			}
			out = append(out, Call{At: e.At, What: what})
		case strings.HasPrefix(e.Device, "/dev/rbd"):
			out = append(out, Call{At: e.At, What: e.Tool + " " + e.Device})
		}
	}
	return out, nil
}

// Running reports whether the node's kubelet runs (not killed by a power-off).
func (n *Node) Running() bool {
	k := n.kubelet.Load()
	return !n.poweredOff.Load() && k != nil && !k.Exited()
}

// Devices returns the /dev/rbdN nodes the node's mappings made.
func (n *Node) Devices() []string {
	var devs []string
	records, _ := filepath.Glob(filepath.Join(n.state(), "rbd*.json"))
	for _, rec := range records {
		devs = append(devs, "/dev/"+strings.TrimSuffix(filepath.Base(rec), ".json"))
	}
	return devs
}

// Stop stops the kubelet and the runtime, unmounts what the kubelet left
// under its root (its mount namespace goes with it) and frees the node's
// devices.
func (n *Node) Stop() {
	// A frozen node ends only once it runs again.
	_ = n.Cgroup.Thaw(10 * time.Second)
	if k := n.kubelet.Load(); k != nil {
		k.Stop(10 * time.Second)
	}
	if n.cri != nil {
		n.cri.Stop(5 * time.Second)
	}
	Cleanup(n.dir)
	if n.mounts != nil {
		n.mounts.Kill()
	}
	n.Cgroup.Remove()
	n.Net.Remove()
}

// Cleanup frees what the shim made for a node whose files are in dir: loop
// devices, device nodes and krbd clients. An aborted run's nodes are
// cleaned this way when the next run starts.
func Cleanup(dir string) {
	records, _ := filepath.Glob(filepath.Join(dir, "rbd-state", "rbd*.json"))
	pending, _ := filepath.Glob(filepath.Join(dir, "rbd-state", "pending-*.json"))
	clients, _ := filepath.Glob(filepath.Join(dir, "rbd-state", "clients", "*", "client.json"))
	for _, rec := range append(append(records, pending...), clients...) {
		var mp struct {
			FusePid  int    `json:"fusePid"`
			Pid      int    `json:"pid"`
			FuseConn uint32 `json:"fuseConn"`
		}
		if data, err := os.ReadFile(rec); err == nil && json.Unmarshal(data, &mp) == nil {
			if mp.FusePid == 0 {
				mp.FusePid = mp.Pid // a client.json
			}
			// First the connection, so that nothing waits on the client
			// any more; then the client; then the loop device over it.
			if mp.FuseConn > 0 {
				AbortFuse(mp.FuseConn)
			}
			// Only if the pid still runs a krbd client: it may have been reused.
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", mp.FusePid)); mp.FusePid > 0 && err == nil &&
				strings.Contains(string(cmdline), "/krbd_client.py\x00") {
				_ = syscall.Kill(mp.FusePid, syscall.SIGKILL)
			}
		}
		if n := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(rec), "rbd"), ".json"); strings.HasPrefix(filepath.Base(rec), "rbd") {
			_ = exec.Command("losetup", "-d", "/dev/loop"+n).Run()
			_ = os.Remove("/dev/rbd" + n)
		}
		_ = os.Remove(rec)
	}
	// Loop devices over the node's clients' files that no record names (a
	// map killed before it recorded its device).
	state := filepath.Join(dir, "rbd-state") + "/"
	paths, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil && strings.HasPrefix(string(data), state) {
			_ = exec.Command("losetup", "-d", "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p)))).Run()
		}
	}
}

// AbortFuse aborts a FUSE connection: every request waiting on it fails.
// A frozen or fenced krbd client otherwise keeps the loop device's writeback,
// and anything that syncs, in the kernel for good, even after it is killed.
func AbortFuse(conn uint32) {
	const fusectl = "/sys/fs/fuse/connections"
	if entries, err := os.ReadDir(fusectl); err == nil && len(entries) == 0 {
		_ = exec.Command("mount", "-t", "fusectl", "fusectl", fusectl).Run()
	}
	_ = os.WriteFile(filepath.Join(fusectl, strconv.FormatUint(uint64(conn), 10), "abort"), []byte("1"), 0o200)
}
