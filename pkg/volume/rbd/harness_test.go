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

// Package rbd_test holds behaviour specs for the in-tree RBD volume plugin.
// They drive the plugin only through its exported API (ProbeVolumePlugins,
// NewAttacher, WaitForAttach) with a scripted exec standing in for the rbd
// tools, so the same specs compile against stock and patched Kubernetes.
package rbd_test

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/utils/exec"
	testingexec "k8s.io/utils/exec/testing"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdplugin"
)

const (
	specNamespace = rbdplugin.Namespace
	specSecret    = rbdplugin.SecretName
	// specKey is the cephx key in the Secret; specs check where it shows up.
	specKey = "AQBnotarealkeybutlongenoughtospotAAAAAAAAAAAAA=="
	// watcherAddr and watcherClient describe the node that holds the image.
	watcherAddr   = "10.0.0.5:0/1234"
	watcherClient = 4567
)

// invocation is one command the plugin ran, with what it could see then.
type invocation struct {
	cmd  string
	args []string
	// keyFiles maps each --keyfile/--keyring/-k argument to the file's
	// content at the time the command ran ("" when it did not exist).
	keyFiles map[string]string
}

func (i invocation) String() string { return i.cmd + " " + strings.Join(i.args, " ") }

// has reports whether the invocation carries the exact argument arg.
func (i invocation) has(arg string) bool {
	for _, a := range i.args {
		if a == arg {
			return true
		}
	}
	return false
}

// reply is what a scripted command prints and its exit code.
type reply struct {
	out    string
	stderr string
	rc     int
	// delay makes the command take that long (for timeouts).
	delay time.Duration
}

// rbdTools scripts modprobe, rbd and rbd-nbd. Watchers answers rbd status:
// it is called with the number of status calls so far and returns the
// watchers to report (JSON or text, whichever format the caller asked for).
type rbdTools struct {
	mu    sync.Mutex
	calls []invocation

	nbd bool // modprobe nbd and rbd-nbd --version succeed

	// status, when set, overrides the reply to rbd status entirely.
	status func(n int, json bool) reply
	// watchers returns the watchers on the image at the n-th status call.
	watchers func(n int) int
	statusN  int

	mapReply reply
	// mapped: a map succeeded; watchersAfterMap then answers rbd status.
	mapped           bool
	watchersAfterMap int

	// meta answers rbd image-meta list (none: no metadata); ceph answers
	// each ceph call in turn (none left: success).
	meta reply
	ceph []reply
}

func newRBDTools() *rbdTools {
	return &rbdTools{
		watchers: func(int) int { return 0 },
		// A failing map ends AttachDisk at once: there is no kernel device to
		// wait for in a unit test, and the specs are about what runs before.
		mapReply: reply{stderr: "rbd: sysfs write failed\nrbd: map failed: (1) Operation not permitted", rc: 1},
	}
}

// statusReply renders n watchers the way rbd status prints them.
func statusReply(n int, json bool) reply {
	if json {
		w := make([]string, 0, n)
		for i := 0; i < n; i++ {
			w = append(w, fmt.Sprintf(`{"address":"%s","client":%d,"cookie":%d}`, watcherAddr, watcherClient+i, 94240535307232+i))
		}
		return reply{out: `{"watchers":[` + strings.Join(w, ",") + `]}` + "\n"}
	}
	if n == 0 {
		return reply{out: "Watchers: none\n"}
	}
	out := "Watchers:\n"
	for i := 0; i < n; i++ {
		out += fmt.Sprintf("\twatcher=%s client.%d cookie=%d\n", watcherAddr, watcherClient+i, 94240535307232+i)
	}
	return reply{out: out}
}

func (r *rbdTools) respond(inv invocation) reply {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case inv.cmd == "modprobe":
		if r.nbd && inv.has("nbd") {
			return reply{}
		}
		return reply{stderr: "modprobe: FATAL: Module " + strings.Join(inv.args, " ") + " not found", rc: 1}
	case inv.cmd == "rbd-nbd" && inv.has("--version"):
		if r.nbd {
			return reply{out: "ceph version 16.2.15"}
		}
		return reply{rc: 127}
	case len(inv.args) > 0 && inv.args[0] == "status":
		json := inv.has("--format=json") || inv.has("json")
		n := r.statusN
		r.statusN++
		if r.status != nil {
			return r.status(n, json)
		}
		if r.mapped {
			return statusReply(r.watchersAfterMap, json)
		}
		return statusReply(r.watchers(n), json)
	case len(inv.args) > 0 && inv.args[0] == "map":
		r.mapped = r.mapReply.rc == 0
		return r.mapReply
	case len(inv.args) > 1 && inv.args[0] == "image-meta" && inv.args[1] == "list":
		return r.meta
	case len(inv.args) > 0 && inv.args[0] == "info" && inv.has("--format=json"):
		return reply{out: `{"name":"user-pv","block_name_prefix":"rbd_data.5eed","format":2}` + "\n"}
	case inv.cmd == "ceph":
		if len(r.ceph) == 0 {
			return reply{}
		}
		next := r.ceph[0]
		r.ceph = r.ceph[1:]
		return next
	}
	return reply{}
}

// record notes an invocation, reading any key file it names while it runs.
func (r *rbdTools) record(cmd string, args []string) invocation {
	inv := invocation{cmd: cmd, args: append([]string(nil), args...), keyFiles: map[string]string{}}
	for i, a := range args {
		path := ""
		switch {
		case strings.HasPrefix(a, "--keyfile="):
			path = strings.TrimPrefix(a, "--keyfile=")
		case strings.HasPrefix(a, "--keyring="):
			path = strings.TrimPrefix(a, "--keyring=")
		case (a == "--keyfile" || a == "--keyring" || a == "-k") && i+1 < len(args):
			path = args[i+1]
		}
		if path != "" {
			data, _ := os.ReadFile(path)
			inv.keyFiles[path] = string(data)
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, inv)
	r.mu.Unlock()
	return inv
}

func (r *rbdTools) command(cmd string, args ...string) exec.Cmd {
	inv := r.record(cmd, args)
	return &scriptedCmd{reply: r.respond(inv)}
}

// scriptedCmd answers like a process that prints reply.out on stdout and
// reply.stderr on stderr, and exits with reply.rc.
type scriptedCmd struct {
	reply          reply
	stdout, stderr io.Writer
}

var _ exec.Cmd = &scriptedCmd{}

func (c *scriptedCmd) exit() error {
	time.Sleep(c.reply.delay)
	if c.reply.rc != 0 {
		return &testingexec.FakeExitError{Status: c.reply.rc}
	}
	return nil
}

func (c *scriptedCmd) Run() error {
	if c.stdout != nil {
		_, _ = io.WriteString(c.stdout, c.reply.out)
	}
	if c.stderr != nil {
		_, _ = io.WriteString(c.stderr, c.reply.stderr)
	}
	return c.exit()
}

func (c *scriptedCmd) CombinedOutput() ([]byte, error) {
	return []byte(c.reply.out + c.reply.stderr), c.exit()
}

func (c *scriptedCmd) Output() ([]byte, error) {
	if c.stderr != nil {
		_, _ = io.WriteString(c.stderr, c.reply.stderr)
	}
	return []byte(c.reply.out), c.exit()
}

func (c *scriptedCmd) SetDir(string)                      {}
func (c *scriptedCmd) SetStdin(io.Reader)                 {}
func (c *scriptedCmd) SetStdout(w io.Writer)              { c.stdout = w }
func (c *scriptedCmd) SetStderr(w io.Writer)              { c.stderr = w }
func (c *scriptedCmd) SetEnv([]string)                    {}
func (c *scriptedCmd) StdoutPipe() (io.ReadCloser, error) { return nil, fmt.Errorf("not scripted") }
func (c *scriptedCmd) StderrPipe() (io.ReadCloser, error) { return nil, fmt.Errorf("not scripted") }
func (c *scriptedCmd) Start() error                       { return fmt.Errorf("not scripted") }
func (c *scriptedCmd) Wait() error                        { return fmt.Errorf("not scripted") }
func (c *scriptedCmd) Stop()                              {}

// exec returns an exec.Interface that answers every command from the script.
func (r *rbdTools) exec() exec.Interface {
	fe := &testingexec.FakeExec{
		LookPathFunc: func(file string) (string, error) { return "/usr/bin/" + file, nil },
	}
	for i := 0; i < 512; i++ {
		fe.CommandScript = append(fe.CommandScript, r.command)
	}
	return fe
}

// invocations returns the commands run so far.
func (r *rbdTools) invocations() []invocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]invocation(nil), r.calls...)
}

// captureLogs sends klog's output at -v=10 to a buffer until the test ends
// and returns a function that reads what was logged so far.
func captureLogs(t *testing.T) func() string {
	t.Helper()
	var logs bytes.Buffer
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("v", "10")
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	klog.SetOutput(&logs)
	t.Cleanup(func() {
		klog.Flush()
		_ = fs.Set("v", "0")
		_ = fs.Set("logtostderr", "true")
		klog.SetOutput(os.Stderr)
	})
	return func() string {
		klog.Flush()
		return logs.String()
	}
}

// find returns the invocations of cmd whose first argument is sub.
func (r *rbdTools) find(cmd, sub string) []invocation {
	var out []invocation
	for _, inv := range r.invocations() {
		if inv.cmd == cmd && len(inv.args) > 0 && inv.args[0] == sub {
			out = append(out, inv)
		}
	}
	return out
}

// volumeUse says how a pod uses an RBD volume.
type volumeUse struct {
	inline      bool
	accessModes []v1.PersistentVolumeAccessMode
	readOnly    bool
}

func (u volumeUse) spec() *volume.Spec {
	src := v1.RBDPersistentVolumeSource{
		CephMonitors: []string{"10.0.0.1:6789"},
		RBDImage:     "user-pv",
		RBDPool:      "sock_shop",
		RadosUser:    "kube",
		FSType:       "ext4",
		SecretRef:    &v1.SecretReference{Name: specSecret, Namespace: specNamespace},
	}
	if u.inline {
		return volume.NewSpecFromVolume(&v1.Volume{
			Name: "user-vol",
			VolumeSource: v1.VolumeSource{RBD: &v1.RBDVolumeSource{
				CephMonitors: src.CephMonitors, RBDImage: src.RBDImage, RBDPool: src.RBDPool,
				RadosUser: src.RadosUser, FSType: src.FSType, ReadOnly: u.readOnly,
				SecretRef: &v1.LocalObjectReference{Name: specSecret},
			}},
		})
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "user-pv"},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:            u.accessModes,
			PersistentVolumeSource: v1.PersistentVolumeSource{RBD: &src},
		},
	}
	return volume.NewSpecFromPersistentVolume(pv, u.readOnly)
}

// newAttacher returns the real RBD plugin's attacher on a fake kubelet host
// whose commands are answered by tools and whose API server holds specKey.
func newAttacher(t *testing.T, tools *rbdTools) volume.Attacher {
	t.Helper()
	return rbdplugin.NewAttacher(t, tools.exec(), specKey)
}

func specPod() *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "user-0", Namespace: specNamespace, UID: types.UID("pod-uid")}}
}
