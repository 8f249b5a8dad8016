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

// Package node holds the node-side end-to-end tests: the patched RBD
// plugin's attach path (WaitForAttach: the watcher gate, the fence, the map
// and the holder record) with the real exec and the real rbd and ceph tools
// against a real single-node Ceph cluster. There is no kernel rbd module
// here: "rbd map" runs for real and fails at the kernel step, and where a
// test needs a mapping, a librbd client opens the image in its place.
package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdplugin"
	e2ereport "github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/report"
)

var (
	cluster *ceph.Cluster
	// watchTimeout is the OSD's osd_client_watch_timeout for this run.
	watchTimeout time.Duration
	nodeReport   *e2ereport.Writer
)

// gateSchedule says when the gate checks: upstream's wait.Backoff (1 s x1.4,
// 10 steps) with its step capped at 1 s, so about every second for the
// upstream backoff's 49 s.
const gateSchedule = "every 1 s for 50 s (upstream's 1 s x1.4 backoff, its step capped at 1 s)"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := e2ereport.Dir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if watchTimeout, err = ceph.WatchTimeoutFromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	nodeReport = e2ereport.New(dir, "node")
	// Kills what an aborted earlier run left running.
	if err := process.SetRegistry(filepath.Join(filepath.Dir(dir), "node-running.pids")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The kubelet's rbd reads /etc/ceph/ceph.conf; here there is none, and
	// an empty file keeps rbd from warning about it.
	emptyConf := filepath.Join(os.TempDir(), "kube-rbd-failover-empty-ceph.conf")
	if err := os.WriteFile(emptyConf, nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	os.Setenv("CEPH_CONF", emptyConf)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster, err = ceph.Start(ctx, ceph.Options{Dir: filepath.Join(dir, "ceph"), WatchTimeout: watchTimeout, OSDs: 3})
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting Ceph: %v\n(logs in %s)\n", err, filepath.Join(dir, "ceph", "log"))
		return 1
	}
	report("# Node-side e2e (real Ceph %s, %s RBD plugin)\n\n", ceph.Version(), pluginBuild())
	report("- cluster started in %v; osd_client_watch_timeout %v\n", time.Since(start).Round(time.Millisecond), watchTimeout)
	code := m.Run()
	cluster.Stop()
	if code == 0 {
		_ = os.RemoveAll(filepath.Join(dir, "ceph"))
	} else {
		fmt.Fprintf(os.Stderr, "Ceph logs kept in %s\n", filepath.Join(dir, "ceph", "log"))
	}
	return code
}

// report adds a line to the node-side report.
func report(format string, args ...interface{}) { nodeReport.Printf(format, args...) }

func newImage(t *testing.T, name string) rbdplugin.Volume {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cluster.CreateImage(ctx, name, 16); err != nil {
		t.Fatalf("create image: %v", err)
	}
	return rbdplugin.Volume{Monitor: cluster.Monitor, Pool: "rbd", Image: name, User: "kube",
		AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}}
}

// attach runs WaitForAttach and returns its error, how long it took and the
// commands it ran.
func attach(t *testing.T, vol rbdplugin.Volume) (error, time.Duration, *rbdplugin.RecordingExec) {
	t.Helper()
	e := rbdplugin.NewRecordingExec()
	a := rbdplugin.NewAttacher(t, e, cluster.UserKey)
	start := time.Now()
	_, err := a.WaitForAttach(vol.Spec(), "", rbdplugin.Pod(), 5*time.Minute)
	return err, time.Since(start), e
}

// reachedMap reports whether the attach got past the gate to a map whose
// arguments the real rbd accepted: with no kernel module, rbd map fails at
// the kernel step, and the plugin's error carries rbd's output.
func reachedMap(err error, e *rbdplugin.RecordingExec) bool {
	return err != nil && len(e.Calls("rbd", "map")) > 0 && ceph.CheckMapFailedAtKernel([]byte(err.Error()), err) == nil
}

// TestMapArgumentCheckCatchesAMadeUpOption shows that the kernel-step check
// the suites apply to every map is not blind: the real rbd refuses a
// made-up option before the kernel step, and the check says so.
func TestMapArgumentCheckCatchesAMadeUpOption(t *testing.T) {
	newImage(t, "argv")
	keyFile, err := cluster.HolderKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := []string{"map", "rbd/argv", "--id", "kube", "-m", cluster.Monitor, "--keyfile=" + keyFile}
	for _, tc := range []struct {
		extra []string
		ok    bool
	}{
		{extra: []string{"-o", "noshare"}, ok: true},
		{extra: []string{"--read-only"}, ok: true},
		{extra: []string{"-o", "noshareX"}},
		{extra: []string{"--no-such-flag"}},
	} {
		args := append(append([]string(nil), base...), tc.extra...)
		out, err := exec.CommandContext(ctx, "rbd", args...).CombinedOutput()
		if checkErr := ceph.CheckMapFailedAtKernel(out, err); (checkErr == nil) != tc.ok {
			t.Errorf("rbd %s: check = %v, want accepted: %v (rbd said %q)", strings.Join(tc.extra, " "), checkErr, tc.ok, out)
		}
	}
	// rbd-nbd: the same for its own parser, and an image that does not exist
	// shows that it opens the image before the nbd step.
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{args: base, ok: true},
		{args: append(append([]string(nil), base...), "--read-only"), ok: true},
		{args: append(append([]string(nil), base...), "-o", "noshare")},
		{args: append(append([]string(nil), base...), "--no-such-flag")},
		{args: append([]string{"map", "rbd/no-such-image"}, base[2:]...)},
	} {
		out, err := exec.CommandContext(ctx, "rbd-nbd", tc.args...).CombinedOutput()
		if checkErr := ceph.CheckNbdMapFailedAtKernel(out, err); (checkErr == nil) != tc.ok {
			t.Errorf("rbd-nbd %s: check = %v, want accepted: %v (rbd-nbd said %q)", strings.Join(tc.args[1:], " "), checkErr, tc.ok, out)
		}
	}
}

func TestIdleImagePassesAtFirstCheck(t *testing.T) {
	vol := newImage(t, "idle")
	err, took, e := attach(t, vol)
	if !reachedMap(err, e) {
		t.Fatalf("WaitForAttach = %v, want the gate to pass and rbd map to run", err)
	}
	if n := len(e.Calls("rbd", "status")); n != 1 {
		t.Errorf("rbd status ran %d times, want 1", n)
	}
	gate := e.Calls("rbd", "map")[0].Start.Sub(e.Calls("rbd", "status")[0].Start)
	report("- idle image: gate passed at the first check; rbd status to rbd map %v (WaitForAttach %v in all)\n",
		gate.Round(time.Millisecond), took.Round(time.Millisecond))
}

func TestReadOnlyManyMapsReadOnlyWithoutGate(t *testing.T) {
	vol := newImage(t, "rox")
	holder, err := cluster.Hold("rox")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	vol.AccessModes = []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}
	vol.ReadOnly = true
	err, _, e := attach(t, vol)
	if !reachedMap(err, e) {
		t.Fatalf("WaitForAttach = %v, want rbd map to run despite the watcher", err)
	}
	if n := len(e.Calls("rbd", "status")); n != 0 {
		t.Errorf("rbd status ran %d times for a read-only ROX volume, want 0", n)
	}
	for _, c := range e.Calls("rbd", "map") {
		if !contains(c.Args, "--read-only") {
			t.Errorf("mapped without --read-only: %q", c.Args)
		}
	}
	report("- ROX volume used read-only, image watched by %s: no gate, `rbd map --read-only`\n", holder.Address)
}

func TestLiveWatcherBlocksAndIsNamed(t *testing.T) {
	t.Parallel()
	vol := newImage(t, "live")
	holder, err := cluster.Hold("live")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	err, took, e := attach(t, vol)
	if err == nil || !strings.Contains(err.Error(), "is still being used by 1 watcher(s)") ||
		!strings.Contains(err.Error(), holder.Address) ||
		!strings.Contains(err.Error(), fmt.Sprintf("client.%d", holder.Client)) {
		t.Fatalf("WaitForAttach = %v, want the live watcher %s (client.%d) named", err, holder.Address, holder.Client)
	}
	if n := len(e.Calls("rbd", "map")); n != 0 {
		t.Errorf("rbd map ran %d times while a live watcher held the image", n)
	}
	checks := len(e.Calls("rbd", "status"))
	report("- live watcher: gate refused after %v and %d checks (%.0f `rbd status` calls per minute for the waiting volume): %q\n",
		took.Round(time.Second), checks, float64(checks)/took.Minutes(), err.Error())
}

func TestKilledWatcherExpiresThenGatePasses(t *testing.T) {
	t.Parallel()
	vol := newImage(t, "killed")
	holder, err := cluster.Hold("killed")
	if err != nil {
		t.Fatal(err)
	}
	sampler := rbdplugin.StartCmdlineSampler()

	// Power off: the holder dies without closing the image.
	holder.Kill()
	killed := time.Now()
	// The harness polls the watchers itself. lastSeen is when the last poll
	// that still saw the dead holder's watch began: the watch cannot come
	// back, so a gate that passed before then passed while it was there.
	type expiry struct{ lastSeen, gone time.Time }
	expired := make(chan expiry, 1)
	go func() {
		lastSeen := killed
		for time.Since(killed) < 3*time.Minute {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			polled := time.Now()
			w, err := cluster.Watchers(ctx, "killed")
			cancel()
			if err == nil && len(w) == 0 {
				expired <- expiry{lastSeen: lastSeen, gone: time.Now()}
				return
			}
			if err == nil {
				lastSeen = polled
			}
			time.Sleep(100 * time.Millisecond)
		}
		close(expired)
	}()
	err, waited, e := attach(t, vol)
	passed := time.Now()
	seen := sampler.Stop()

	if !reachedMap(err, e) {
		t.Fatalf("WaitForAttach = %v, want the gate to pass once the watch expired", err)
	}
	exp, ok := <-expired
	if !ok {
		t.Fatalf("the killed holder's watch never expired")
	}
	// No fixed tolerance: under load an rbd call of the harness can take
	// seconds, and the gate may rightly pass before the harness sees the
	// expiry.
	if passed.Before(exp.lastSeen) {
		t.Errorf("the gate passed %v before a check that still saw the watch", exp.lastSeen.Sub(passed))
	}
	checks := e.Calls("rbd", "status")
	if len(checks) < 2 {
		t.Errorf("the gate checked %d times, want it to wait for the watch", len(checks))
	}
	report("- killed watcher (%s): the harness saw the watch gone %v after the kill; the gate passed %v after that (negative: the gate saw it first), at check %d (%s; %.0f `rbd status` calls per minute while it waited)\n",
		holder.Address, exp.gone.Sub(killed).Round(100*time.Millisecond), passed.Sub(exp.gone).Round(100*time.Millisecond),
		len(checks), gateSchedule, float64(len(checks))/waited.Minutes())

	// Guarantee 5 (docs/design.md) while the plugin ran rbd: what any local user could read.
	if len(seen) == 0 {
		t.Errorf("sampled no rbd command line; the key check proves nothing")
	}
	for _, cmdline := range seen {
		if strings.Contains(cmdline, cluster.UserKey) {
			t.Errorf("the cephx key is in /proc/<pid>/cmdline: %s", cmdline)
		}
	}
	report("- /proc/<pid>/cmdline of %d sampled rbd processes: the key in none\n", len(seen))
}

func TestMonitorDownIsABoundedError(t *testing.T) {
	vol := newImage(t, "mondown")
	cluster.StopMonitor()
	defer func() {
		if err := cluster.StartMonitor(); err != nil {
			t.Fatalf("restart the monitor: %v", err)
		}
	}()
	err, took, e := attach(t, vol)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("WaitForAttach = %v, want a timeout error", err)
	}
	if n := len(e.Calls("rbd", "map")); n != 0 {
		t.Errorf("rbd map ran %d times with the monitor down", n)
	}
	if took > 3*time.Minute {
		t.Errorf("WaitForAttach took %v, longer than the process deadline allows", took)
	}
	report("- monitor down: bounded error after %v, nothing mapped: %q\n", took.Round(time.Second), err.Error())
}

func contains(args []string, want string) bool {
	for _, a := range args {
		if a == want {
			return true
		}
	}
	return false
}
