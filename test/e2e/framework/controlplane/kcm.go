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

package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

// ControllerManager is a running kube-controller-manager.
type ControllerManager struct {
	// Build names it in logs and reports ("stock" or "patched").
	Build  string
	cp     *ControlPlane
	binary string
	proc   *process.Process
}

// NodeMonitorGracePeriod is how long a node may miss heartbeats before the
// node lifecycle controller marks it NotReady: 10 s, or
// NODE_MONITOR_GRACE_PERIOD seconds (upstream's default is 40).
var NodeMonitorGracePeriod = func() time.Duration {
	v := os.Getenv("NODE_MONITOR_GRACE_PERIOD")
	if v == "" {
		return 10 * time.Second
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 4 {
		panic(fmt.Sprintf("NODE_MONITOR_GRACE_PERIOD=%q: want a number of seconds, at least 4", v))
	}
	return time.Duration(n) * time.Second
}()

// StartControllerManager runs binary with the controllers the node-failure
// path needs: the attach/detach controller, the node lifecycle controller
// (NotReady and its taints, short grace periods), the taint eviction
// controller that evicts the pods of an unreachable node, and the pod
// garbage collector. Its log is log/kube-controller-manager-<build>.log.
func (cp *ControlPlane) StartControllerManager(ctx context.Context, build, binary string) (*ControllerManager, error) {
	m := &ControllerManager{Build: build, cp: cp, binary: binary}
	return m, m.Start(ctx)
}

// Start starts it (again, after Stop) and waits until it is healthy.
func (m *ControllerManager) Start(ctx context.Context) error {
	cp, build, binary := m.cp, m.Build, m.binary
	port, err := process.FreePort()
	if err != nil {
		return err
	}
	proc, err := process.Start("kube-controller-manager-"+build, filepath.Join(cp.Dir, "log"), nil, binary,
		"--kubeconfig="+cp.ControllerKubeconfig,
		"--authentication-kubeconfig="+cp.ControllerKubeconfig,
		"--authorization-kubeconfig="+cp.ControllerKubeconfig,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(cp.Dir, "kcm-certs-"+build),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--controllers=attachdetach,nodelifecycle,taint-eviction-controller,podgc",
		"--node-monitor-period=1s",
		"--node-monitor-grace-period="+NodeMonitorGracePeriod.String(),
		"--node-eviction-rate=10", "--secondary-node-eviction-rate=10",
		"--v=2")
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	if err := proc.WaitFor(time.Minute, func() error { return httpOK(ctx, nil, url, "") }); err != nil {
		proc.Stop(5 * time.Second)
		return err
	}
	m.proc = proc
	return nil
}

// Stop stops it.
func (m *ControllerManager) Stop() { m.proc.Stop(10 * time.Second) }

// Log is its log file.
func (m *ControllerManager) Log() string { return m.proc.Log }
