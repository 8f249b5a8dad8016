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

// Package nodeagent is a simulated node for the control-plane end-to-end
// tests: it does, for RBD volumes, what a kubelet's node status manager and
// volume manager do. It registers its Node with controller-managed
// attach/detach, keeps the Node's Lease and Ready condition fresh, reports
// status.volumesInUse for the volumes of its pods, and for a volume the
// attach/detach controller lists in status.volumesAttached runs the patched
// RBD plugin's WaitForAttach (the real watcher gate against real Ceph).
// There is no kernel rbd here, so the "rbd map" the plugin runs once the gate
// and the fence let it through runs for real (and must fail only at the
// kernel step) and is then carried out by a librbd client that opens the
// image and keeps it open (a watcher, as a kernel mapping is) until the node
// lets go; that client also plays the pod's application, writing a record
// every 200 ms.
//
// The agent writes what it has mapped to a state file the harness reads.
package nodeagent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/volume"
	"k8s.io/kubernetes/pkg/volume/rbd"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
	"k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/rbdmap"
)

const (
	// ControllerManagedAnnotation hands attach/detach to the controller.
	ControllerManagedAnnotation = "volumes.kubernetes.io/controller-managed-attach-detach"
	// leaseDuration is what the Lease claims; the node lifecycle
	// controller's grace period decides when the node is NotReady.
	leaseDuration = 40
	// retryAttach is how long the agent waits before retrying a failed
	// WaitForAttach (the kubelet backs off too).
	retryAttach = 2 * time.Second
)

// Config configures an agent.
type Config struct {
	Client kubernetes.Interface
	Node   string
	// Dir holds the agent's plugin directory, key files and state file.
	Dir string
	// CephConf names the monitors for the librbd client that stands in for
	// the kernel mapping.
	CephConf string
	// Heartbeat is how often the Lease and the Ready condition are renewed,
	// and Sync how often pods and the Node are read.
	Heartbeat, Sync time.Duration
	// KubeletVersion is what the Node reports as its kubelet's version: a
	// patched kubelet's carries "+rbdfailover", which the patched
	// controller requires of a failover's target.
	KubeletVersion string
	// AppOffset is where on an image the node's application writes its
	// records (ceph.AppSlot), so that each node's writes can be told apart.
	AppOffset int64
}

// Mapping is an image the node has mapped.
type Mapping struct {
	Volume string `json:"volume"`
	Image  string `json:"image"`
	// ReadOnly is true when the plugin mapped the image read-only.
	ReadOnly bool `json:"readOnly"`
	// Address and Client identify the mapping's watch on the image.
	Address string `json:"address"`
	Client  uint64 `json:"client"`
	// Since is when the map made the mapping.
	Since time.Time `json:"since"`
	// AppLog is the log of the writes the pod's application makes through
	// the mapping (ceph.ReadAppLog).
	AppLog string `json:"appLog"`
}

// AttachError is the last error WaitForAttach returned for a volume.
type AttachError struct {
	Volume string    `json:"volume"`
	Error  string    `json:"error"`
	Time   time.Time `json:"time"`
}

// State is what the agent writes to its state file.
type State struct {
	Node        string        `json:"node"`
	Partitioned bool          `json:"partitioned"`
	Mappings    []Mapping     `json:"mappings"`
	AttachError []AttachError `json:"attachErrors"`
}

// StateFile is the state file's name in the agent's directory.
const StateFile = "state.json"

// Agent is a running simulated node.
type Agent struct {
	cfg         Config
	plugins     *volume.VolumePluginMgr
	partitioned atomic.Bool

	mu        sync.Mutex
	mappings  map[string]*mapped
	attaching map[string]bool
	errors    map[string]AttachError
}

type mapped struct {
	Mapping
	holder *ceph.Holder
}

// New prepares an agent.
func New(cfg Config) (*Agent, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, mappings: map[string]*mapped{}, attaching: map[string]bool{}, errors: map[string]AttachError{}}
	host := &volumeHost{dir: cfg.Dir, client: cfg.Client, exec: exec.New(), mounter: mount.NewFakeMounter(nil)}
	a.plugins = &volume.VolumePluginMgr{}
	if err := a.plugins.InitPlugins(rbd.ProbeVolumePlugins(), nil, host); err != nil {
		return nil, fmt.Errorf("init the rbd plugin: %w", err)
	}
	return a, a.writeState()
}

// Partition cuts the agent off the API server (no heartbeat, no sync) and
// keeps its mappings: a node that lost the control plane but not Ceph.
func (a *Agent) Partition() {
	a.partitioned.Store(true)
	klog.InfoS("Partitioned from the API server; mappings kept", "node", a.cfg.Node)
	_ = a.writeState()
}

// Heal ends a partition: heartbeat and sync resume.
func (a *Agent) Heal() {
	a.partitioned.Store(false)
	klog.InfoS("Reconnected to the API server", "node", a.cfg.Node)
	_ = a.writeState()
}

// Run registers the Node and runs the heartbeat and sync loops until ctx
// ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.register(ctx); err != nil {
		return err
	}
	go a.loop(ctx, a.cfg.Heartbeat, a.heartbeat)
	a.loop(ctx, a.cfg.Sync, a.sync)
	return nil
}

func (a *Agent) loop(ctx context.Context, period time.Duration, f func(context.Context) error) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if !a.partitioned.Load() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "Node agent step failed", "node", a.cfg.Node)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) register(ctx context.Context) error {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        a.cfg.Node,
		Labels:      map[string]string{v1.LabelHostname: a.cfg.Node, v1.LabelOSStable: "linux"},
		Annotations: map[string]string{ControllerManagedAnnotation: "true"},
	}}
	if _, err := a.cfg.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node %s: %w", a.cfg.Node, err)
	}
	return nil
}

// heartbeat renews the Lease and the Ready condition, as the kubelet's node
// status manager does.
func (a *Agent) heartbeat(ctx context.Context) error {
	now := metav1.NowMicro()
	leases := a.cfg.Client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	lease, err := leases.Get(ctx, a.cfg.Node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.cfg.Node, Namespace: v1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: pointerTo(a.cfg.Node),
				LeaseDurationSeconds: pointerTo[int32](leaseDuration), RenewTime: &now},
		}
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create lease: %w", err)
		}
	case err != nil:
		return fmt.Errorf("get lease: %w", err)
	default:
		lease.Spec.RenewTime = &now
		if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("renew lease: %w", err)
		}
	}
	// The node lifecycle controller writes the Node too (taints).
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := a.cfg.Client.CoreV1().Nodes().Get(ctx, a.cfg.Node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ready := v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady",
			Message: "simulated node agent is posting ready status", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}
		conditions := []v1.NodeCondition{ready}
		for _, c := range node.Status.Conditions {
			if c.Type == v1.NodeReady {
				if c.Status == v1.ConditionTrue {
					conditions[0].LastTransitionTime = c.LastTransitionTime
				}
				continue
			}
			conditions = append(conditions, c)
		}
		node.Status.Conditions = conditions
		node.Status.NodeInfo.KubeletVersion = a.cfg.KubeletVersion
		_, err = a.cfg.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

// podVolume is an RBD PersistentVolume one of the node's pods uses.
type podVolume struct {
	spec volume.Spec
	pod  *v1.Pod
}

// sync does one round of the volume manager's work.
func (a *Agent) sync(ctx context.Context) error {
	pods, err := a.cfg.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", a.cfg.Node).String()})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	desired := map[string]podVolume{}
	podVolumes := map[*v1.Pod][]string{}
	var deleting []*v1.Pod
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.DeletionTimestamp != nil {
			deleting = append(deleting, pod)
			continue
		}
		podVolumes[pod] = nil
		for _, vol := range pod.Spec.Volumes {
			if vol.PersistentVolumeClaim == nil {
				continue
			}
			// Any doubt ends this round: a volume left out of desired
			// would be unmapped under a running pod.
			spec, err := a.specFor(ctx, pod.Namespace, vol.PersistentVolumeClaim.ClaimName, vol.PersistentVolumeClaim.ReadOnly)
			if err != nil {
				return fmt.Errorf("pod %s/%s volume %s: %w", pod.Namespace, pod.Name, vol.Name, err)
			}
			if spec.PersistentVolume.Spec.RBD == nil {
				continue // only RBD is simulated
			}
			plugin, err := a.plugins.FindAttachablePluginBySpec(spec)
			if err != nil {
				return fmt.Errorf("pod %s/%s volume %s: %w", pod.Namespace, pod.Name, vol.Name, err)
			}
			if plugin == nil {
				continue
			}
			unique, err := volumeutil.GetUniqueVolumeNameFromSpec(plugin, spec)
			if err != nil {
				return err
			}
			desired[string(unique)] = podVolume{spec: *spec, pod: pod}
			podVolumes[pod] = append(podVolumes[pod], string(unique))
		}
	}
	if err := a.startPods(ctx, podVolumes); err != nil {
		return err
	}

	// Let go of what no running pod uses any more, then finish deleting
	// the pods whose volumes are released, as the kubelet does.
	a.mu.Lock()
	for name, m := range a.mappings {
		if _, ok := desired[name]; !ok {
			klog.InfoS("Unmapping a volume no pod uses", "node", a.cfg.Node, "volume", name)
			m.holder.Close()
			delete(a.mappings, name)
		}
	}
	a.mu.Unlock()
	if err := a.writeState(); err != nil {
		return err
	}
	for _, pod := range deleting {
		if err := a.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name,
			metav1.DeleteOptions{GracePeriodSeconds: pointerTo[int64](0)}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("finish deleting pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
	}

	node, err := a.cfg.Client.CoreV1().Nodes().Get(ctx, a.cfg.Node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node: %w", err)
	}
	inUse := make([]v1.UniqueVolumeName, 0, len(desired))
	for name := range desired {
		inUse = append(inUse, v1.UniqueVolumeName(name))
	}
	sort.Slice(inUse, func(i, j int) bool { return inUse[i] < inUse[j] })
	if !equalVolumes(node.Status.VolumesInUse, inUse) {
		node.Status.VolumesInUse = inUse
		if node, err = a.cfg.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("report volumes in use: %w", err)
		}
	}
	attached := map[string]bool{}
	for _, av := range node.Status.VolumesAttached {
		attached[string(av.Name)] = true
	}
	for name, pv := range desired {
		a.mu.Lock()
		busy := a.mappings[name] != nil || a.attaching[name]
		if !busy && attached[name] {
			a.attaching[name] = true
		}
		a.mu.Unlock()
		if !busy && attached[name] {
			go a.attach(name, pv)
		}
	}
	return nil
}

// startPods reports a pod Running, its container running, once all its
// volumes are mapped: the status a kubelet posts, and what keeps an evicted
// pod on a dead node in the attach/detach controller's desired state (a
// deleted pod with no running container counts as terminated).
func (a *Agent) startPods(ctx context.Context, podVolumes map[*v1.Pod][]string) error {
	for pod, volumes := range podVolumes {
		if pod.Status.Phase == v1.PodRunning {
			continue
		}
		a.mu.Lock()
		ready := true
		for _, v := range volumes {
			ready = ready && a.mappings[v] != nil
		}
		a.mu.Unlock()
		if !ready {
			continue
		}
		now := metav1.Now()
		pod.Status.Phase = v1.PodRunning
		pod.Status.StartTime = &now
		pod.Status.Conditions = []v1.PodCondition{
			{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: now},
			{Type: v1.PodInitialized, Status: v1.ConditionTrue, LastTransitionTime: now},
			{Type: v1.ContainersReady, Status: v1.ConditionTrue, LastTransitionTime: now},
			{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: now},
		}
		pod.Status.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, v1.ContainerStatus{
				Name: c.Name, Image: c.Image, Ready: true, Started: pointerTo(true),
				State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}},
			})
		}
		if _, err := a.cfg.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("report pod %s/%s running: %w", pod.Namespace, pod.Name, err)
		}
		klog.InfoS("Pod running", "node", a.cfg.Node, "pod", klog.KObj(pod))
	}
	return nil
}

func equalVolumes(a, b []v1.UniqueVolumeName) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// specFor resolves a claim to its bound PersistentVolume's spec.
func (a *Agent) specFor(ctx context.Context, namespace, claim string, readOnly bool) (*volume.Spec, error) {
	pvc, err := a.cfg.Client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if pvc.Spec.VolumeName == "" {
		return nil, fmt.Errorf("claim %s/%s is not bound", namespace, claim)
	}
	pv, err := a.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return volume.NewSpecFromPersistentVolume(pv, readOnly), nil
}

// attach runs the plugin's WaitForAttach for an attached volume and keeps
// the mapping it makes; on error it records it and lets a later sync retry.
func (a *Agent) attach(name string, pv podVolume) {
	defer func() {
		time.Sleep(retryAttach)
		a.mu.Lock()
		delete(a.attaching, name)
		a.mu.Unlock()
	}()
	spec := &pv.spec
	key, err := a.keyFile(spec)
	if err != nil {
		a.attachFailed(name, err)
		return
	}
	source := spec.PersistentVolume.Spec.RBD
	appLog := filepath.Join(a.cfg.Dir, "app-"+source.RBDImage+".log")
	e := &rbdmap.Exec{Interface: exec.New(), Hold: func(args []string) (*ceph.Holder, error) {
		cfg := ceph.HolderConfig{Conf: a.cfg.CephConf, User: source.RadosUser, KeyFile: key,
			Pool: source.RBDPool, Log: filepath.Join(a.cfg.Dir, "holder.log")}
		if !readOnlyMap(args) {
			cfg.AppLog, cfg.AppTag, cfg.AppOffset = appLog, a.cfg.Node, a.cfg.AppOffset
		}
		return ceph.StartHolder(cfg, source.RBDImage)
	}}
	attacher, err := a.newAttacher(e)
	if err != nil {
		a.attachFailed(name, err)
		return
	}
	klog.InfoS("WaitForAttach", "node", a.cfg.Node, "volume", name, "pod", klog.KObj(pv.pod))
	// There is no /dev/rbdN to find after the map: a map that the plugin
	// kept (its holder still runs) ends in the plugin's device timeout.
	_, err = attacher.WaitForAttach(spec, "", pv.pod, 5*time.Minute)
	holder, args, heldAt := e.Held()
	if holder == nil {
		if err == nil {
			err = fmt.Errorf("WaitForAttach succeeded without mapping")
		}
		a.attachFailed(name, err)
		return
	}
	a.mu.Lock()
	a.mappings[name] = &mapped{holder: holder, Mapping: Mapping{Volume: name, Image: source.RBDPool + "/" + source.RBDImage,
		ReadOnly: readOnlyMap(args), Address: holder.Address, Client: holder.Client, Since: heldAt}}
	if !readOnlyMap(args) {
		a.mappings[name].AppLog = appLog
	}
	delete(a.errors, name)
	a.mu.Unlock()
	klog.InfoS("Mapped", "node", a.cfg.Node, "volume", name, "readOnly", readOnlyMap(args), "client", holder.Client)
	_ = a.writeState()
}

func (a *Agent) attachFailed(name string, err error) {
	klog.ErrorS(err, "WaitForAttach failed", "node", a.cfg.Node, "volume", name)
	a.mu.Lock()
	a.errors[name] = AttachError{Volume: name, Error: err.Error(), Time: time.Now()}
	a.mu.Unlock()
	_ = a.writeState()
}

// readOnlyMap reports whether an rbd map maps read-only: the plugin passes
// --read-only (rbd_access.go).
func readOnlyMap(args []string) bool {
	for _, arg := range args {
		if arg == "--read-only" {
			return true
		}
	}
	return false
}

// keyFile writes the cephx key of the volume's secret to a file only the
// agent reads, for the librbd client.
func (a *Agent) keyFile(spec *volume.Spec) (string, error) {
	ref := spec.PersistentVolume.Spec.RBD.SecretRef
	if ref == nil {
		return "", fmt.Errorf("volume %s has no secretRef", spec.Name())
	}
	secret, err := a.cfg.Client.CoreV1().Secrets(ref.Namespace).Get(context.TODO(), ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read the volume's secret: %w", err)
	}
	path := filepath.Join(a.cfg.Dir, "keys", spec.Name())
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, secret.Data["key"], 0o600)
}

func (a *Agent) newAttacher(e exec.Interface) (volume.Attacher, error) {
	host := &volumeHost{dir: a.cfg.Dir, client: a.cfg.Client, exec: e, mounter: mount.NewFakeMounter(nil)}
	mgr := &volume.VolumePluginMgr{}
	if err := mgr.InitPlugins(rbd.ProbeVolumePlugins(), nil, host); err != nil {
		return nil, err
	}
	plugin, err := mgr.FindAttachablePluginByName("kubernetes.io/rbd")
	if err != nil {
		return nil, err
	}
	return plugin.NewAttacher()
}

// writeState replaces the state file atomically.
func (a *Agent) writeState() error {
	a.mu.Lock()
	st := State{Node: a.cfg.Node, Partitioned: a.partitioned.Load(), Mappings: []Mapping{}, AttachError: []AttachError{}}
	for _, m := range a.mappings {
		st.Mappings = append(st.Mappings, m.Mapping)
	}
	for _, e := range a.errors {
		st.AttachError = append(st.AttachError, e)
	}
	a.mu.Unlock()
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(a.cfg.Dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(a.cfg.Dir, StateFile))
}

// ReadState reads an agent's state file.
func ReadState(dir string) (State, error) {
	var st State
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(data, &st)
}

// pointerTo returns a pointer to a copy of v. (The agent also builds against
// v1.28, whose k8s.io/utils has no ptr package.)
func pointerTo[T any](v T) *T { return &v }
