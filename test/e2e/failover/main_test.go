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

// Package failover runs the node-failure scenarios end to end: a real Ceph
// cluster, real etcd and kube-apiserver, the stock and the patched
// kube-controller-manager, and simulated nodes (test/e2e/cmd/rbd-node-agent)
// that run the RBD plugin's attach path of the same build against Ceph.
// Every scenario runs against both builds; the timings, the safety
// monitor's counts and the stale writes go to failover-report.md in the
// run's directory. The safety verdict is in monitor_test.go.
package failover

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/controlplane"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/nodeagent"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

const (
	namespace  = "sock-shop"
	secretName = "ceph-user-secret"
)

// env is what TestMain set up for the scenarios.
var env struct {
	dir          string
	watchTimeout time.Duration
	cluster      *ceph.Cluster
	cp           *controlplane.ControlPlane
	kcm          map[string]string                  // build -> kube-controller-manager binary
	agents       map[string]nodeagent.LaunchOptions // build -> how its nodes start
	report       *report
}

// binaries the harness needs, from the environment hack/test-e2e.sh sets.
var binaryVars = []string{"E2E_ETCD", "E2E_KUBE_APISERVER", "E2E_KCM_STOCK", "E2E_KCM_PATCHED",
	"E2E_NODE_AGENT_STOCK", "E2E_NODE_AGENT_PATCHED", "E2E_KUBELET_VERSION_STOCK", "E2E_KUBELET_VERSION_PATCHED"}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env.dir = os.Getenv("E2E_DIR")
	if env.dir == "" {
		env.dir = filepath.Join(os.TempDir(), "kube-rbd-failover-e2e")
	}
	env.dir = filepath.Join(env.dir, "failover")
	var err error
	if env.watchTimeout, err = ceph.WatchTimeoutFromEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var missing []string
	for _, v := range binaryVars {
		if os.Getenv(v) == "" {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "%s not set: run the control-plane e2e through make e2e (hack/test-e2e.sh builds the binaries)\n",
			strings.Join(missing, ", "))
		return 2
	}
	// Kills what an aborted earlier run left running.
	if err := process.SetRegistry(filepath.Join(filepath.Dir(filepath.Dir(env.dir)), "failover-running.pids")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env.kcm = map[string]string{"stock": os.Getenv("E2E_KCM_STOCK"), "patched": os.Getenv("E2E_KCM_PATCHED")}
	code := setUp(m)
	if code != 0 {
		fmt.Fprintf(os.Stderr, "logs kept in %s\n", env.dir)
	}
	return code
}

func setUp(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	var err error
	env.cluster, err = ceph.Start(ctx, ceph.Options{Dir: filepath.Join(env.dir, "ceph"), WatchTimeout: env.watchTimeout})
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting Ceph: %v\n", err)
		return 1
	}
	defer env.cluster.Stop()
	cephReady := time.Since(start)
	env.cp, err = controlplane.Start(ctx, filepath.Join(env.dir, "controlplane"), controlplane.Binaries{
		Etcd: os.Getenv("E2E_ETCD"), APIServer: os.Getenv("E2E_KUBE_APISERVER")})
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n", err)
		return 1
	}
	defer env.cp.Stop()
	cpReady := time.Since(start) - cephReady

	// The kubelet's rbd reads /etc/ceph/ceph.conf; an empty one keeps it
	// quiet (the monitors come from the PersistentVolume).
	emptyConf := filepath.Join(env.dir, "empty-ceph.conf")
	if err := os.WriteFile(emptyConf, nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Each build's nodes run the RBD plugin of that build's tree and report
	// that build's kubelet version.
	env.agents = map[string]nodeagent.LaunchOptions{}
	for _, build := range []string{"stock", "patched"} {
		env.agents[build] = nodeagent.LaunchOptions{Binary: os.Getenv("E2E_NODE_AGENT_" + strings.ToUpper(build)),
			KubeletVersion: os.Getenv("E2E_KUBELET_VERSION_" + strings.ToUpper(build)),
			Kubeconfig:     env.cp.NodeKubeconfig, CephConf: env.cluster.ClientConf,
			Dir: filepath.Join(env.dir, "nodes"), LogDir: filepath.Join(env.dir, "log"),
			Env: []string{"CEPH_CONF=" + emptyConf}}
	}
	if err := createSecret(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "creating the namespace and the Ceph secret: %v\n", err)
		return 1
	}
	env.report = newReport(filepath.Join(filepath.Dir(env.dir), "failover-report.md"))
	env.report.header(ceph.Version(), apiserverVersion(), env.watchTimeout, cephReady, cpReady)
	code := m.Run()
	env.report.write()
	return code
}

func createSecret(ctx context.Context) error {
	client := env.cp.Client
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := client.CoreV1().Secrets(namespace).Create(ctx, &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName},
		Type:       "kubernetes.io/rbd",
		Data:       map[string][]byte{"key": []byte(env.cluster.UserKey)},
	}, metav1.CreateOptions{})
	return err
}

func apiserverVersion() string {
	v, err := env.cp.Client.Discovery().ServerVersion()
	if err != nil {
		return "(unknown)"
	}
	return v.GitVersion
}
