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

// Package rbdplugin drives the (patched) in-tree RBD volume plugin's node
// side from a test: the real plugin on a fake kubelet volume host whose exec
// runs the real rbd tools.
package rbdplugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/kubernetes/pkg/volume/rbd"
	volumetest "k8s.io/kubernetes/pkg/volume/testing"
	"k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdmap"
)

const (
	// Namespace and SecretName hold the cephx key the plugin reads.
	Namespace  = "sock-shop"
	SecretName = "ceph-user-secret"
)

// Volume describes an RBD PersistentVolume and how a pod uses it.
type Volume struct {
	Monitor, Pool, Image, User string
	AccessModes                []v1.PersistentVolumeAccessMode
	ReadOnly                   bool
}

// Spec returns the volume spec the kubelet would hand the plugin.
func (v Volume) Spec() *volume.Spec {
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: v.Image},
		Spec: v1.PersistentVolumeSpec{
			AccessModes: v.AccessModes,
			PersistentVolumeSource: v1.PersistentVolumeSource{RBD: &v1.RBDPersistentVolumeSource{
				CephMonitors: []string{v.Monitor}, RBDImage: v.Image, RBDPool: v.Pool,
				RadosUser: v.User, FSType: "ext4",
				SecretRef: &v1.SecretReference{Name: SecretName, Namespace: Namespace},
			}},
		},
	}
	return volume.NewSpecFromPersistentVolume(pv, v.ReadOnly)
}

// Pod is the pod the volume is attached for.
func Pod() *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "user-0", Namespace: Namespace, UID: "e2e-pod"}}
}

// Call is one command the plugin ran.
type Call struct {
	Start time.Time
	// End is when it returned (zero while it runs).
	End  time.Time
	Args []string
}

// RecordingExec runs commands for real and records them.
type RecordingExec struct {
	exec.Interface
	mu    sync.Mutex
	calls []Call
}

// NewRecordingExec wraps the real exec.
func NewRecordingExec() *RecordingExec { return &RecordingExec{Interface: exec.New()} }

// record notes a command and returns a function that notes its end.
func (r *RecordingExec) record(cmd string, args []string) func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, Call{Start: time.Now(), Args: append([]string{cmd}, args...)})
	i := len(r.calls) - 1
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls[i].End = time.Now()
	}
}

// Command implements exec.Interface.
func (r *RecordingExec) Command(cmd string, args ...string) exec.Cmd {
	return r.CommandContext(context.Background(), cmd, args...)
}

// CommandContext implements exec.Interface.
func (r *RecordingExec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	done := r.record(cmd, args)
	return &timedCmd{Cmd: r.Interface.CommandContext(ctx, cmd, args...), done: done}
}

// timedCmd notes when the command returned.
type timedCmd struct {
	exec.Cmd
	done func()
}

func (c *timedCmd) CombinedOutput() ([]byte, error) {
	defer c.done()
	return c.Cmd.CombinedOutput()
}

func (c *timedCmd) Output() ([]byte, error) {
	defer c.done()
	return c.Cmd.Output()
}

func (c *timedCmd) Run() error {
	defer c.done()
	return c.Cmd.Run()
}

// Calls returns the commands whose first two words are cmd and sub ("" for
// any).
func (r *RecordingExec) Calls(cmd, sub string) []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Call
	for _, c := range r.calls {
		if c.Args[0] == cmd && (sub == "" || len(c.Args) > 1 && c.Args[1] == sub) {
			out = append(out, c)
		}
	}
	return out
}

type execHost struct {
	volume.VolumeHost
	exec    exec.Interface
	mounter mount.Interface
}

func (h *execHost) GetExec(string) exec.Interface { return h.exec }

func (h *execHost) GetMounter(name string) mount.Interface {
	if h.mounter != nil {
		return h.mounter
	}
	return h.VolumeHost.GetMounter(name)
}

// NewAttacher returns the RBD plugin's attacher on a fake kubelet host whose
// commands run through e and whose API server holds the user's key.
func NewAttacher(t *testing.T, e exec.Interface, key string) volume.Attacher {
	t.Helper()
	return NewAttacherWithMounter(t, e, key, nil)
}

// NewAttacherWithMounter is NewAttacher with a mounter of the test's (the
// host's real one, for MountDevice); nil keeps the fake kubelet host's.
func NewAttacherWithMounter(t *testing.T, e exec.Interface, key string, m mount.Interface) volume.Attacher {
	t.Helper()
	client := fake.NewSimpleClientset(&v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: Namespace},
		Type:       "kubernetes.io/rbd",
		Data:       map[string][]byte{"key": []byte(key)},
	})
	host := &execHost{VolumeHost: volumetest.NewFakeKubeletVolumeHost(t, t.TempDir(), client, nil), exec: e, mounter: m}
	mgr := &volume.VolumePluginMgr{}
	if err := mgr.InitPlugins(rbd.ProbeVolumePlugins(), nil, host); err != nil {
		t.Fatalf("init plugins: %v", err)
	}
	plug, err := mgr.FindAttachablePluginByName("kubernetes.io/rbd")
	if err != nil {
		t.Fatalf("find the rbd plugin: %v", err)
	}
	a, err := plug.NewAttacher()
	if err != nil {
		t.Fatalf("new attacher: %v", err)
	}
	return a
}

// CmdlineSampler reads /proc/<pid>/cmdline of every running rbd and rbd-nbd
// process, as any local user could, until stopped.
type CmdlineSampler struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples []string
}

// StartCmdlineSampler starts sampling every millisecond.
func StartCmdlineSampler() *CmdlineSampler {
	s := &CmdlineSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			entries, _ := os.ReadDir("/proc")
			for _, e := range entries {
				if e.Name()[0] < '0' || e.Name()[0] > '9' {
					continue
				}
				data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				if err != nil || len(data) == 0 {
					continue
				}
				argv := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
				if base := filepath.Base(argv[0]); base == "rbd" || base == "rbd-nbd" {
					s.mu.Lock()
					s.samples = append(s.samples, strings.Join(argv, " "))
					s.mu.Unlock()
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return s
}

// Stop stops sampling and returns every command line seen.
func (s *CmdlineSampler) Stop() []string {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// MapExec is a RecordingExec whose "rbd map" is carried out by a librbd
// client (rbdmap.Exec): hold starts it, and unmapping the image by name
// closes it.
type MapExec struct {
	*RecordingExec
	*rbdmap.Exec
}

// NewMapExec records every command; hold starts the client that stands in
// for the mapping.
func NewMapExec(hold func(args []string) (*ceph.Holder, error)) *MapExec {
	r := NewRecordingExec()
	return &MapExec{RecordingExec: r, Exec: &rbdmap.Exec{Interface: r, Hold: hold}}
}

// Command implements exec.Interface.
func (m *MapExec) Command(cmd string, args ...string) exec.Cmd { return m.Exec.Command(cmd, args...) }

// CommandContext implements exec.Interface.
func (m *MapExec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	return m.Exec.CommandContext(ctx, cmd, args...)
}

// LookPath implements exec.Interface.
func (m *MapExec) LookPath(file string) (string, error) { return m.RecordingExec.LookPath(file) }
