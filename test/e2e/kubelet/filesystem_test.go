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

package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/controlplane"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
)

// Timeouts of the suite, in one place.
const (
	nodeReadyTimeout  = 2 * time.Minute
	podRunningTimeout = 3 * time.Minute
	podGoneTimeout    = 3 * time.Minute
	pollInterval      = 200 * time.Millisecond
)

// failoverTimeout bounds power-off → replacement Running: the node monitor
// grace period, the eviction, the pod's grace period, the watch timeout and
// the kubelet's own retries (its backoff after a gate timeout reaches 2 min).
func failoverTimeout() time.Duration {
	return controlplane.NodeMonitorGracePeriod + evictionDelay() + 2*env.watchTimeout + 4*time.Minute
}

// poll waits for cond and fails the test with what after timeout.
func poll(ctx context.Context, t *testing.T, what string, timeout time.Duration, cond func(context.Context) (bool, error)) time.Time {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, pollInterval, timeout, true, cond); err != nil {
		t.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
	return time.Now()
}

// createVolume creates an image and a bound PV/PVC pair named after it.
func createVolume(ctx context.Context, t *testing.T, image string, mode v1.PersistentVolumeAccessMode) string {
	t.Helper()
	if err := env.cluster.CreateImage(ctx, image, 64); err != nil {
		t.Fatalf("create image: %v", err)
	}
	return bindVolume(ctx, t, image, mode)
}

// bindVolume makes a bound PV and PVC, both named image, for an image that
// is there.
func bindVolume(ctx context.Context, t *testing.T, image string, mode v1.PersistentVolumeAccessMode) string {
	t.Helper()
	client := env.cp.Client
	size := resource.MustParse("64Mi")
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: image, Namespace: namespace},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{mode},
			VolumeName:  image,
		},
	}
	// From JSON: the field's Go type was renamed in v1.29, its JSON was not.
	if err := json.Unmarshal([]byte(`{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}`), pvc); err != nil {
		t.Fatal(err)
	}
	pvc, err := client.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PVC: %v", err)
	}
	pv, err := client.CoreV1().PersistentVolumes().Create(ctx, &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: image},
		Spec: v1.PersistentVolumeSpec{
			Capacity:    v1.ResourceList{v1.ResourceStorage: size},
			AccessModes: []v1.PersistentVolumeAccessMode{mode},
			PersistentVolumeSource: v1.PersistentVolumeSource{RBD: &v1.RBDPersistentVolumeSource{
				CephMonitors: []string{env.cluster.Monitor}, RBDPool: "rbd", RBDImage: image, RadosUser: "kube",
				FSType: "ext4", SecretRef: &v1.SecretReference{Name: secretName, Namespace: namespace},
			}},
			ClaimRef:                      &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: namespace, Name: image, UID: pvc.UID},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PV: %v", err)
	}
	// No PV controller runs: the harness binds the pre-bound pair.
	pv.Status.Phase = v1.VolumeBound
	if _, err := client.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("bind PV: %v", err)
	}
	pvc.Status.Phase = v1.ClaimBound
	pvc.Status.AccessModes = []v1.PersistentVolumeAccessMode{mode}
	pvc.Status.Capacity = v1.ResourceList{v1.ResourceStorage: size}
	if _, err := client.CoreV1().PersistentVolumeClaims(namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("bind PVC: %v", err)
	}
	return image
}

// podOption changes a pod before it is created.
type podOption func(*v1.Pod)

// withoutVolume makes a pod that uses no volume.
func withoutVolume(p *v1.Pod) {
	p.Spec.Volumes = nil
	for i := range p.Spec.Containers {
		p.Spec.Containers[i].VolumeMounts = nil
	}
}

// waitPodRunning waits until p is Running and returns when it saw that.
func waitPodRunning(ctx context.Context, t *testing.T, p *v1.Pod, timeout time.Duration) time.Time {
	t.Helper()
	at := runningAt(ctx, p, timeout)
	if at.IsZero() {
		t.Fatalf("%s not Running within %v", p.Name, timeout)
	}
	return at
}

// runningAt polls p until it is Running and returns when it saw that, or
// zero after timeout (safe outside the test's goroutine).
func runningAt(ctx context.Context, p *v1.Pod, timeout time.Duration) time.Time {
	var at time.Time
	_ = wait.PollUntilContextTimeout(ctx, pollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		q, err := env.cp.Client.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err == nil && q.Status.Phase == v1.PodRunning {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	return at
}

// evictionToleration is how long the scenarios' pods stay on a node that
// is unreachable or not ready: 0 s (evicted at once), TOLERATION_SECONDS,
// or with TOLERATION_SECONDS=upstream what upstream's admission gives a pod
// that sets none (300 s).
func evictionToleration() podOption {
	switch v := os.Getenv("TOLERATION_SECONDS"); v {
	case "":
		return tolerateUnreachable(0)
	case "upstream":
		return func(*v1.Pod) {}
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			panic(fmt.Sprintf("TOLERATION_SECONDS=%q: want seconds or \"upstream\"", v))
		}
		return tolerateUnreachable(time.Duration(n) * time.Second)
	}
}

// evictionDelay is evictionToleration's delay.
func evictionDelay() time.Duration {
	p := &v1.Pod{}
	evictionToleration()(p)
	if len(p.Spec.Tolerations) == 0 {
		return 300 * time.Second
	}
	return time.Duration(*p.Spec.Tolerations[0].TolerationSeconds) * time.Second
}

// tolerateUnreachable sets how long the pod stays on a node that is
// unreachable or not ready (upstream's admission default: 300 s).
func tolerateUnreachable(d time.Duration) podOption {
	return func(p *v1.Pod) {
		s := int64(d / time.Second)
		p.Spec.Tolerations = []v1.Toleration{
			{Key: v1.TaintNodeUnreachable, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: &s},
			{Key: v1.TaintNodeNotReady, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoExecute, TolerationSeconds: &s},
		}
	}
}

// createPod creates a pod bound to node (no scheduler runs) that mounts claim.
func createPod(ctx context.Context, t *testing.T, name, claim string, node *kubelet.Node, opts ...podOption) *v1.Pod {
	t.Helper()
	grace := int64(2)
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1.PodSpec{
			NodeName:                      node.Name,
			TerminationGracePeriodSeconds: &grace,
			// The kubelet sets up only volumes that a container mounts.
			Containers: []v1.Container{{Name: "user", Image: "registry.k8s.io/pause:3.9",
				VolumeMounts: []v1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []v1.Volume{{Name: "data", VolumeSource: v1.VolumeSource{
				PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	for _, o := range opts {
		o(pod)
	}
	pod, err := env.cp.Client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return pod
}

// startNode starts a node that runs build's kubelet.
func startNode(ctx context.Context, t *testing.T, name, build string) *kubelet.Node {
	t.Helper()
	opts := env.nodes
	opts.Kubelet = os.Getenv("E2E_KUBELET_" + strings.ToUpper(build))
	n, err := kubelet.Start(ctx, name, opts)
	if err != nil {
		t.Fatalf("start node %s: %v", name, err)
	}
	t.Cleanup(func() {
		n.Stop()
		// A dead node left in the API counts against its zone: with most
		// nodes NotReady the node lifecycle controller stops evicting
		// (partial disruption of a small cluster), and later scenarios
		// would wait for evictions that never come.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := env.cp.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %s: %v", name, err)
		}
	})
	poll(ctx, t, "node "+name+" Ready", nodeReadyTimeout, func(ctx context.Context) (bool, error) {
		node, err := env.cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == v1.NodeReady && c.Status == v1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	checkKubeletVersion(ctx, t, name, build)
	return n
}

// checkKubeletVersion fails the run unless the node's kubelet reports the
// build it was started from: the patched build's version carries the
// series' revision (the controller trusts that to fence), stock's does not.
func checkKubeletVersion(ctx context.Context, t *testing.T, name, build string) {
	t.Helper()
	node, err := env.cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read node %s: %v", name, err)
	}
	got := node.Status.NodeInfo.KubeletVersion
	want := kubeletVersion("E2E_KUBELET_" + strings.ToUpper(build))
	if got != want || strings.Contains(got, "+rbdfailover.") != (build == patched) {
		t.Fatalf("node %s reports kubelet %q; the %s build is %q", name, got, build, want)
	}
	// A patched build left over from an older series would pass the check
	// above: it must be of the series' revision.
	if build == patched && !ofRevision(got) {
		t.Fatalf("node %s reports kubelet %q; the series is at revision %q (E2E_RBDF_REVISION)", name, got, os.Getenv("E2E_RBDF_REVISION"))
	}
}

// readBack maps image read-only on the host, outside every node, through
// rbd-fuse and a loop device, and returns the content of file on it.
func readBack(ctx context.Context, t *testing.T, image, file string) string {
	t.Helper()
	keyFile, err := env.cluster.HolderKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	script := `set -euo pipefail
fuse="$1/fuse"; mnt="$1/mnt"; mkdir -p "$fuse" "$mnt"
rbd-fuse -p rbd -r "$2" --id kube -m "$3" --keyfile="$4" "$fuse"
trap 'umount "$mnt" 2>/dev/null || true; [[ -z "${loop:-}" ]] || losetup -d "$loop"; umount "$fuse"' EXIT
for _ in $(seq 100); do [[ -e "$fuse/$2" ]] && break; sleep 0.1; done
loop="$(losetup -f --show -r "$fuse/$2")"
mount -o ro,noload "$loop" "$mnt"
cat "$mnt/$5"`
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--", "bash", "-c", script, "read-back",
		t.TempDir(), image, env.cluster.Monitor, keyFile, file)
	cmd.Env = append(os.Environ(), env.nodes.Env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("read %s back from image %s: %v: %s%s", file, image, err, out, stderr.Bytes())
	}
	return string(out)
}

// TestPodGetsARealFilesystemOnTheImage runs one pod with an RBD volume on a
// real kubelet: the attach/detach controller attaches, the kubelet's volume
// manager maps through the patched plugin (gate, fence, map, record),
// formats the device with a real ext4 and mounts it into the pod; data
// written there is on the image; when the pod goes, the kubelet unmounts
// and unmaps, and the image has no watcher left.
func TestPodGetsARealFilesystemOnTheImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	useControllerManager(ctx, t, patched)
	nodeA := startNode(ctx, t, "node-a", patched)
	claim := createVolume(ctx, t, "realfs", v1.ReadWriteOnce)
	start := time.Now()
	pod := createPod(ctx, t, "user-1", claim, nodeA)
	client := env.cp.Client
	running := poll(ctx, t, "pod user-1 Running", podRunningTimeout, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == v1.PodRunning, nil
	})
	mounts, err := nodeA.Mounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	volDir := nodeA.PodVolumeDir(string(pod.UID), claim)
	var device string
	for _, m := range mounts {
		if f := strings.Fields(m); f[1] == volDir {
			device = f[0]
		}
	}
	if device == "" {
		t.Fatalf("no /dev/rbd* mounted at the pod's volume %s; node-a's rbd mounts: %q", volDir, mounts)
	}
	fstype, err := nodeA.InNode(ctx, "findmnt", "-n", "-o", "FSTYPE", volDir)
	if err != nil || trim(fstype) != "ext4" {
		t.Fatalf("the pod's volume is %q (%v), want ext4", fstype, err)
	}
	watchers, err := env.cluster.Watchers(ctx, "realfs")
	if err != nil || len(watchers) != 1 {
		t.Fatalf("watchers of the mapped image: %v (%v), want exactly node-a's", watchers, err)
	}
	meta, err := env.cluster.ImageMeta(ctx, "realfs")
	if err != nil {
		t.Fatal(err)
	}
	holder := fmt.Sprintf("kubernetes.io/rbd-fence.holder.client.%d", watchers[0].Client)
	if _, ok := meta[holder]; !ok {
		t.Errorf("image metadata %v has no holder record %s for node-a's client", meta, holder)
	}

	// The application: a record written through the mounted filesystem.
	record := fmt.Sprintf("node-a wrote this at %s", time.Now().Format(time.RFC3339Nano))
	if out, err := nodeA.InNode(ctx, "sh", "-c", `printf '%s\n' "$1" > "$2/records" && sync "$2/records"`, "app",
		record, volDir); err != nil {
		t.Fatalf("write through the pod's volume: %v: %s", err, out)
	}

	if err := client.CoreV1().Pods(namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "pod user-1 gone", podGoneTimeout, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	unmapped := poll(ctx, t, "node-a unmounts and unmaps", podGoneTimeout, func(ctx context.Context) (bool, error) {
		mounts, err := nodeA.Mounts(ctx)
		if err != nil || len(mounts) != 0 {
			return false, nil
		}
		if _, err := os.Stat(device); err == nil {
			return false, nil
		}
		w, err := env.cluster.Watchers(ctx, "realfs")
		return err == nil && len(w) == 0, nil
	})
	meta, err = env.cluster.ImageMeta(ctx, "realfs")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := meta[holder]; ok {
		t.Errorf("node-a's holder record %s stays after its clean unmap: %v", holder, meta)
	}
	if got := strings.TrimSpace(readBack(ctx, t, "realfs", "records")); got != record {
		t.Errorf("the image holds %q, want node-a's record %q", got, record)
	}
	report("- real kubelet (%s), one pod, RWO RBD volume: Running %v after the pod was created; ext4 on %s (krbd client + loop); the record written through the pod's mount read back from the image after the pod was deleted; unmounted, unmapped and the holder record removed %v after the delete\n",
		nodeA.Name, running.Sub(start).Round(100*time.Millisecond), device, unmapped.Sub(running).Round(100*time.Millisecond))
}

// imageBytes reads n bytes of image at offset, straight from Ceph (rbd
// export): no filesystem, no cache in between.
func imageBytes(ctx context.Context, t *testing.T, image string, offset, n int64) []byte {
	t.Helper()
	keyFile, err := env.cluster.HolderKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "bash", "-c",
		`set -o pipefail; rbd export --no-progress --id kube -m "$1" --keyfile="$2" "rbd/$3" - | tail -c +$(($4 + 1)) | head -c "$5"`,
		"image-bytes", env.cluster.Monitor, keyFile, image, fmt.Sprint(offset), fmt.Sprint(n))
	cmd.Env = append(os.Environ(), env.nodes.Env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) != int(n) {
		t.Fatalf("read %d bytes of image %s at %d: %v: %s", n, image, offset, err, stderr.Bytes())
	}
	return out
}
