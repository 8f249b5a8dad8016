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
	"errors"
	"path/filepath"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
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

// errMapHeld ends the plugin's "rbd map": there is no kernel rbd, and the
// mapping is a librbd client the agent started instead.
var errMapHeld = errors.New("e2e node agent: no kernel rbd; the mapping is held by a librbd client")

// mapExec runs every command for real except "rbd map", which it turns into
// a librbd client that opens the image (so the image gets the watcher a
// kernel mapping would give it) at the moment the kernel would map it.
type mapExec struct {
	exec.Interface
	hold func(args []string) (*ceph.Holder, error)

	mu     sync.Mutex
	holder *ceph.Holder
	args   []string
}

func (e *mapExec) CommandContext(ctx context.Context, cmd string, args ...string) exec.Cmd {
	if cmd == "rbd" && len(args) > 0 && args[0] == "map" {
		return &mapCmd{Cmd: e.Interface.CommandContext(ctx, "false"), e: e, args: args}
	}
	return e.Interface.CommandContext(ctx, cmd, args...)
}

func (e *mapExec) Command(cmd string, args ...string) exec.Cmd {
	return e.CommandContext(context.Background(), cmd, args...)
}

// held returns the holder a map started, if any, and the map's arguments.
func (e *mapExec) held() (*ceph.Holder, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.holder, e.args
}

type mapCmd struct {
	exec.Cmd
	e    *mapExec
	args []string
}

func (c *mapCmd) CombinedOutput() ([]byte, error) {
	h, err := c.e.hold(c.args)
	if err != nil {
		return []byte(err.Error()), err
	}
	c.e.mu.Lock()
	c.e.holder, c.e.args = h, c.args
	c.e.mu.Unlock()
	return []byte(errMapHeld.Error()), errMapHeld
}

func (c *mapCmd) Output() ([]byte, error) { return c.CombinedOutput() }
func (c *mapCmd) Run() error {
	_, err := c.CombinedOutput()
	return err
}
