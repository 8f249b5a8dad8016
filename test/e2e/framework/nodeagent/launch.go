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
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

// Node is a node agent process started by the harness.
type Node struct {
	Name string
	// Dir is the agent's directory (state file, keys, holder log).
	Dir  string
	proc *process.Process
}

// LaunchOptions say how to start a node agent.
type LaunchOptions struct {
	// Binary is the rbd-node-agent program.
	Binary, Kubeconfig, CephConf string
	// Dir is where the agent keeps its files; the log goes to LogDir.
	Dir, LogDir string
	// Env is added to the agent's environment (CEPH_CONF for the plugin's
	// rbd commands).
	Env []string
	// KubeletVersion is what the Node reports as its kubelet's version.
	KubeletVersion string
	// AppOffset is where on an image the node's application writes.
	AppOffset int64
}

// Launch starts the agent of node and waits until it has written its state.
func Launch(node string, o LaunchOptions) (*Node, error) {
	dir := filepath.Join(o.Dir, node)
	proc, err := process.Start("node-agent-"+node, o.LogDir, o.Env, o.Binary,
		"--kubeconfig="+o.Kubeconfig, "--node="+node, "--dir="+dir, "--ceph-conf="+o.CephConf,
		"--kubelet-version="+o.KubeletVersion, fmt.Sprintf("--app-offset=%d", o.AppOffset))
	if err != nil {
		return nil, err
	}
	n := &Node{Name: node, Dir: dir, proc: proc}
	if err := proc.WaitFor(30*time.Second, func() error {
		_, err := ReadState(dir)
		return err
	}); err != nil {
		proc.Kill()
		return nil, err
	}
	return n, nil
}

// PowerOff kills the agent and its librbd clients at once: heartbeat, API
// watch and Ceph session all stop, as when a node loses power.
func (n *Node) PowerOff() { n.proc.Kill() }

// Partition cuts the agent off the API server; its Ceph clients stay.
func (n *Node) Partition() error {
	if err := n.proc.Signal(syscall.SIGUSR1); err != nil {
		return fmt.Errorf("partition %s: %w", n.Name, err)
	}
	return nil
}

// Heal ends a partition.
func (n *Node) Heal() error {
	if err := n.proc.Signal(syscall.SIGUSR2); err != nil {
		return fmt.Errorf("heal %s: %w", n.Name, err)
	}
	return nil
}

// Freeze stops the whole node (the agent and its librbd clients) at once,
// as a paused VM or a hung kernel: no heartbeat, no Ceph traffic, nothing
// closed. Thaw resumes it where it stopped.
func (n *Node) Freeze() error { return n.proc.SignalGroup(syscall.SIGSTOP) }

// Thaw resumes a frozen node.
func (n *Node) Thaw() error { return n.proc.SignalGroup(syscall.SIGCONT) }

// Alive reports whether the agent (and so its mappings) still runs.
func (n *Node) Alive() bool { return !n.proc.Exited() }

// State reads the agent's state file.
func (n *Node) State() (State, error) { return ReadState(n.Dir) }

// Log is the agent's log file.
func (n *Node) Log() string { return n.proc.Log }
