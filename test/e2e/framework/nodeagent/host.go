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
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/mount-utils"
	"k8s.io/utils/exec"
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
