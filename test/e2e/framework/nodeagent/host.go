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

package nodeagent

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
)

// volumeHost is the part of the kubelet's volume host the RBD plugin's
// attacher uses. Any other method panics on the nil VolumeHost: the agent
// must not depend on it unnoticed.
type volumeHost struct {
	volume.VolumeHost
	dir     string
	client  kubernetes.Interface
	exec    exec.Interface
	mounter mount.Interface
}

func (h *volumeHost) GetPluginDir(plugin string) string {
	return filepath.Join(h.dir, "plugins", plugin)
}
func (h *volumeHost) GetVolumeDevicePluginDir(plugin string) string {
	return filepath.Join(h.dir, "plugins", plugin, "volumeDevices")
}
func (h *volumeHost) GetPodVolumeDir(podUID types.UID, plugin, volumeName string) string {
	return filepath.Join(h.dir, "pods", string(podUID), "volumes", plugin, volumeName)
}
func (h *volumeHost) GetPodVolumeDeviceDir(podUID types.UID, plugin string) string {
	return filepath.Join(h.dir, "pods", string(podUID), "volumeDevices", plugin)
}
func (h *volumeHost) GetKubeClient() kubernetes.Interface { return h.client }
func (h *volumeHost) GetMounter(string) mount.Interface   { return h.mounter }
func (h *volumeHost) GetExec(string) exec.Interface       { return h.exec }
func (h *volumeHost) GetHostName() string                 { return filepath.Base(h.dir) }

func (h *volumeHost) GetNodeName() types.NodeName { return types.NodeName(filepath.Base(h.dir)) }

// GetEventRecorder: the agent records no events (the plugin logs too).
func (h *volumeHost) GetEventRecorder() record.EventRecorder { return nil }

// mapExec runs every command for real except what only the kernel can do.
// "rbd map" first runs for real with the plugin's arguments and must fail at
// the kernel step (there is no rbd module here), which proves rbd accepts
// them; then a librbd client opens the image (so the image gets the watch a
// kernel mapping would give it) and the map succeeds. "rbd unmap POOL/IMAGE"
// (the plugin's unmap after a failed claim) closes that client.
type mapExec struct {
	exec.Interface
	hold func(args []string) (*ceph.Holder, error)
	// checkArgs runs the real "rbd map", and release closes a holder;
	// tests replace them.
	checkArgs func(ctx context.Context, args []string) error
	release   func(*ceph.Holder)

	mu     sync.Mutex
	holder *ceph.Holder
	args   []string
	heldAt time.Time
}

func (e *mapExec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	if cmd == "rbd" && len(args) > 1 && args[0] == "map" {
		return &mapCmd{Cmd: e.Interface.CommandContext(ctx, "true"), run: func() ([]byte, error) { return e.mapImage(ctx, args) }}
	}
	if cmd == "rbd" && len(args) > 1 && args[0] == "unmap" && !strings.HasPrefix(args[1], "/dev/") {
		return &mapCmd{Cmd: e.Interface.CommandContext(ctx, "true"), run: e.unmapImage}
	}
	return e.Interface.CommandContext(ctx, cmd, args...)
}

func (e *mapExec) Command(cmd string, args ...string) exec.Cmd {
	return e.CommandContext(context.Background(), cmd, args...)
}

func (e *mapExec) mapImage(ctx context.Context, args []string) ([]byte, error) {
	check := e.checkArgs
	if check == nil {
		check = e.realMap
	}
	if err := check(ctx, args); err != nil {
		return []byte(err.Error()), err
	}
	h, err := e.hold(args)
	if err != nil {
		return []byte(err.Error()), err
	}
	e.mu.Lock()
	e.holder, e.args, e.heldAt = h, args, time.Now()
	e.mu.Unlock()
	return nil, nil
}

// realMap runs the real "rbd map" with args and requires it to fail at the
// kernel step.
func (e *mapExec) realMap(ctx context.Context, args []string) error {
	out, err := e.Interface.CommandContext(ctx, "rbd", args...).CombinedOutput()
	return ceph.CheckMapFailedAtKernel(out, err)
}

func (e *mapExec) unmapImage() ([]byte, error) {
	e.mu.Lock()
	h := e.holder
	e.holder = nil
	e.mu.Unlock()
	switch {
	case h != nil && e.release != nil:
		e.release(h)
	case h != nil:
		h.Close()
	}
	return nil, nil
}

// held returns the holder a map started and kept, if any, the map's
// arguments and when it started.
func (e *mapExec) held() (*ceph.Holder, []string, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.holder, e.args, e.heldAt
}

type mapCmd struct {
	exec.Cmd
	run func() ([]byte, error)
}

func (c *mapCmd) CombinedOutput() ([]byte, error) { return c.run() }
func (c *mapCmd) Output() ([]byte, error)         { return c.run() }
func (c *mapCmd) Run() error {
	_, err := c.run()
	return err
}
