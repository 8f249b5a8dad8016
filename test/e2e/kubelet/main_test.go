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

// Package kubelet holds the end-to-end tests that run the real, patched
// kubelet binary on its node: a real Ceph cluster, a real control plane
// with the patched kube-controller-manager, and kubelets whose "rbd map"
// gives them a real block device (test/e2e/cmd/rbd-shim), on which they make
// and mount a real ext4.
package kubelet

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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/controlplane"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/freezer"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/netns"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
	e2ereport "github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/report"
)

const (
	namespace  = "sock-shop"
	secretName = "ceph-kube"
)

var env struct {
	dir     string
	cluster *ceph.Cluster
	cp      *controlplane.ControlPlane
	kcm     *controlplane.ControllerManager
	nodes   kubelet.Options
	hub     *netns.Hub
	// watchTimeout is the OSDs' osd_client_watch_timeout.
	watchTimeout time.Duration
	// rootEntries are the names in / when the suite started.
	rootEntries map[string]bool
	// report is the suite's part of the e2e report.
	report *e2ereport.Writer
}

// nodesDir holds the nodes' directories: a short path, whatever the
// checkout's, since the kubelet makes unix sockets under its root directory
// (a socket path has at most 107 bytes). One e2e run at a time uses it
// (hack/test-e2e.sh holds a machine-wide lock); the next run cleans it.
const nodesDir = "/run/kube-rbd-failover-e2e/nodes"

// binaryVars name the binaries, from the environment hack/test-e2e.sh sets.
var binaryVars = []string{"E2E_ETCD", "E2E_KUBE_APISERVER", "E2E_KCM_PATCHED", "E2E_KCM_STOCK", "E2E_KUBELET_PATCHED",
	"E2E_KUBELET_STOCK", "E2E_FAKE_CRI", "E2E_RBD_SHIM"}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := e2ereport.Dir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	env.dir = filepath.Join(dir, "kubelet")
	env.report = e2ereport.New(dir, "kubelet")
	for _, v := range binaryVars {
		if os.Getenv(v) == "" {
			fmt.Fprintf(os.Stderr, "%s not set: run the kubelet e2e through make e2e (hack/test-e2e.sh builds the binaries)\n", v)
			return 2
		}
	}
	if v := kubeletVersion("E2E_KUBELET_PATCHED"); !ofRevision(v) {
		fmt.Fprintf(os.Stderr, "the patched kubelet is %q, not of the series' revision %q (E2E_RBDF_REVISION): rebuild it (make)\n",
			v, os.Getenv("E2E_RBDF_REVISION"))
		return 2
	}
	hub := netns.Joined()
	if hub == nil {
		// Every earlier run's nodes (each run has a directory of its own):
		// their devices, FUSE connections and Ceph clients first, then
		// their cgroups; RunInHub removes their namespaces, makes the hub
		// and runs the suite again inside it.
		removeLeftovers := func() {
			leftovers, _ := filepath.Glob(filepath.Join(nodesDir, "*"))
			for _, d := range leftovers {
				kubelet.Cleanup(d)
			}
			freezer.RemoveLeftovers()
		}
		removeLeftovers()
		_ = os.RemoveAll(nodesDir)
		// Again once the suite has ended, however it ended (a timeout's
		// panic skips its own teardown).
		code, err := netns.RunInHub("kubelet", removeLeftovers)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return code
	}
	env.hub = hub
	if env.rootEntries, err = rootEntries(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Kills what an aborted earlier run left running.
	if err := process.SetRegistry(filepath.Join(filepath.Dir(filepath.Dir(env.dir)), "kubelet-running.pids")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = os.RemoveAll(env.dir)
	// The daemons inherit the working directory: the suite's, not the
	// package's source directory.
	if err := os.MkdirAll(env.dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Chdir(env.dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := setUp(m)
	if code != 0 {
		fmt.Fprintf(os.Stderr, "logs kept in %s\n", env.dir)
	}
	return code
}

func setUp(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	watchTimeout, err := ceph.WatchTimeoutFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	env.watchTimeout = watchTimeout
	env.cluster, err = ceph.Start(ctx, ceph.Options{Dir: filepath.Join(env.dir, "ceph"), WatchTimeout: watchTimeout,
		Address: env.hub.CephIP.String(), OSDs: 3})
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting Ceph: %v\n", err)
		return 1
	}
	defer env.cluster.Stop()
	env.cp, err = controlplane.StartAt(ctx, filepath.Join(env.dir, "controlplane"), controlplane.Binaries{
		Etcd: os.Getenv("E2E_ETCD"), APIServer: os.Getenv("E2E_KUBE_APISERVER")}, env.hub.APIServerIP.String())
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n", err)
		return 1
	}
	defer env.cp.Stop()
	env.kcm, err = env.cp.StartControllerManager(ctx, "patched", os.Getenv("E2E_KCM_PATCHED"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting kube-controller-manager: %v\n", err)
		return 1
	}
	// Scenarios switch builds (useControllerManager): stop whichever runs.
	defer func() {
		if env.kcm != nil {
			env.kcm.Stop()
		}
	}()
	emptyConf := filepath.Join(env.dir, "empty-ceph.conf")
	if err := os.WriteFile(emptyConf, nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.nodes = kubelet.Options{Kubelet: os.Getenv("E2E_KUBELET_PATCHED"), FakeCRI: os.Getenv("E2E_FAKE_CRI"),
		RbdShim: os.Getenv("E2E_RBD_SHIM"), Kubeconfig: env.cp.Kubeconfig,
		Dir: nodesDir, LogDir: filepath.Join(env.dir, "log"),
		Env: []string{"CEPH_CONF=" + emptyConf}, Hub: env.hub, NodeMonitorGracePeriod: controlplane.NodeMonitorGracePeriod}
	client := env.cp.Client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		metav1.CreateOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := client.CoreV1().Secrets(namespace).Create(ctx, &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName},
		Type:       "kubernetes.io/rbd",
		Data:       map[string][]byte{"key": []byte(env.cluster.UserKey)},
	}, metav1.CreateOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	report("# Real kubelets (real Ceph %s; kubelet and kube-controller-manager: patched %s, stock %s)\n\n",
		ceph.Version(), kubeletVersion("E2E_KUBELET_PATCHED"), kubeletVersion("E2E_KUBELET_STOCK"))
	report("- osd_client_watch_timeout %v; node-monitor-grace-period %v; the pods' unreachable toleration %v\n", watchTimeout,
		controlplane.NodeMonitorGracePeriod, evictionDelay())
	return m.Run()
}

// ofRevision reports whether a patched build's version is of the series'
// revision (E2E_RBDF_REVISION, from hack/test-e2e.sh): a build left from
// an older series is not.
func ofRevision(version string) bool {
	rev := os.Getenv("E2E_RBDF_REVISION")
	return rev != "" && strings.HasSuffix(strings.TrimSuffix(version, ".dirty"), "+rbdfailover."+rev)
}

// kubeletVersion is what the kubelet binary named by the variable says it is.
func kubeletVersion(variable string) string {
	out, err := exec.Command(os.Getenv(variable), "--version").Output()
	if err != nil {
		return "(unknown)"
	}
	return strings.TrimPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
}

// report adds a line to the real-kubelet report.
func report(format string, args ...interface{}) { env.report.Printf(format, args...) }

func trim(b []byte) string { return strings.TrimSpace(string(b)) }
