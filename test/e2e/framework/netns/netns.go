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

// Package netns gives the end-to-end nodes networks of their own. The hub
// is a network namespace with a bridge that holds one address for Ceph and
// one for the API server; the suite runs inside it (RunInHub re-executes
// the test binary there), so every address lives in a namespace the test
// made. Each node is a network namespace joined to the bridge by a veth
// pair. A node is cut off silently, as a dead link looks from the far end
// (no FIN, no RST, no ICMP): from everything by taking its link down, or
// from one service address by blackhole rules on both sides (on the node
// itself open connections then time out and new ones fail at once).
package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const (
	// Prefix starts the name of every namespace the suites make, so the next
	// run finds what an aborted one left.
	Prefix = "rbdf-e2e-"
	// hubEnv tells the re-executed test binary the hub it runs in.
	hubEnv  = "E2E_HUB_NETNS"
	subnet  = "10.201.0.%d"
	bridge  = "br0"
	cmdWait = 30 * time.Second
)

// Hub is the network the control plane and Ceph listen on.
type Hub struct {
	Name string
	// CephIP is where the Ceph daemons listen, APIServerIP kube-apiserver.
	CephIP, APIServerIP net.IP
	nodes               int
}

func hub(name string) *Hub {
	return &Hub{Name: name, CephIP: net.ParseIP(fmt.Sprintf(subnet, 1)), APIServerIP: net.ParseIP(fmt.Sprintf(subnet, 2))}
}

// ip runs the ip command with a deadline.
func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdWait)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Path is the namespace's file, for nsenter --net.
func Path(name string) string { return "/run/netns/" + name }

// Joined returns the hub this process runs in, or nil outside one.
func Joined() *Hub {
	if name := os.Getenv(hubEnv); name != "" {
		return hub(name)
	}
	return nil
}

// RunInHub makes the hub namespace name (after removing whatever an
// earlier run left), runs this test binary again inside it with the same
// arguments and output (passing SIGINT and SIGTERM on), then runs cleanup
// (what must go before the namespaces: the nodes' devices and frozen
// processes of a run that was cut short), removes the hub and every node
// namespace, and returns the child's exit code.
func RunInHub(name string, cleanup func()) (int, error) {
	if os.Geteuid() != 0 {
		return 0, fmt.Errorf("the suite makes network namespaces, veths and mounts: run it as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return 0, fmt.Errorf("ip not found: install Debian's iproute2 (hack/install-deps.sh)")
	}
	RemoveLeftovers()
	h := hub(Prefix + name)
	if err := h.create(); err != nil {
		h.remove()
		return 0, err
	}
	defer RemoveLeftovers()
	defer cleanup()
	// nsenter joins the network namespace alone: the mounts stay the
	// host's (ip netns exec would mount a sysfs of its own over /sys and
	// hide the cgroup hierarchies).
	cmd := exec.Command("nsenter", append([]string{"--net=" + Path(h.Name), "--"}, os.Args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), hubEnv+"="+h.Name)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run the suite in %s: %w", h.Name, err)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		for sig := range signals {
			_ = cmd.Process.Signal(sig)
		}
	}()
	err := cmd.Wait()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run the suite in %s: %w", h.Name, err)
	}
	return 0, nil
}

func (h *Hub) create() error {
	steps := [][]string{
		{"netns", "add", h.Name},
		{"-n", h.Name, "link", "set", "lo", "up"},
		{"-n", h.Name, "link", "add", bridge, "type", "bridge"},
		{"-n", h.Name, "addr", "add", h.CephIP.String() + "/24", "dev", bridge},
		{"-n", h.Name, "addr", "add", h.APIServerIP.String() + "/24", "dev", bridge},
		{"-n", h.Name, "link", "set", bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return fmt.Errorf("make the hub network: %w", err)
		}
	}
	return nil
}

func (h *Hub) remove() { removeNamespace(h.Name) }

// RemoveLeftovers kills every process in a namespace of ours and removes
// the namespace: what an aborted run left (its veths go with it).
func RemoveLeftovers() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], Prefix) {
			removeNamespace(f[0])
		}
	}
}

func removeNamespace(name string) {
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, p := range strings.Fields(string(out)) {
			var pid int
			if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = ip("netns", "del", name)
}

// Node is a node's network namespace.
type Node struct {
	// Name is the namespace's name.
	Name string
	// IP is the node's address on the hub's bridge.
	IP  net.IP
	hub *Hub
	// veth is the hub's end of the node's veth pair.
	veth string
}

// AddNode makes a namespace for node, with lo and an eth0 on the hub's
// bridge. It must run inside the hub (in the re-executed suite).
func (h *Hub) AddNode(node string) (*Node, error) {
	h.nodes++
	if h.nodes > 200 {
		return nil, fmt.Errorf("no address left on the hub for node %s", node)
	}
	n := &Node{Name: Prefix + node, IP: net.ParseIP(fmt.Sprintf(subnet, 10+h.nodes)), hub: h,
		veth: fmt.Sprintf("veth%d", h.nodes)}
	// The namespace name is the node's; one left by an earlier test of the
	// same run goes first.
	removeNamespace(n.Name)
	steps := [][]string{
		{"netns", "add", n.Name},
		{"-n", n.Name, "link", "set", "lo", "up"},
		// Run in the hub: the hub keeps one end, the node gets eth0.
		{"link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", n.Name},
		{"link", "set", n.veth, "master", bridge, "up"},
		{"-n", n.Name, "addr", "add", n.IP.String() + "/24", "dev", "eth0"},
		{"-n", n.Name, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			n.Remove()
			return nil, fmt.Errorf("make node %s's network: %w", node, err)
		}
	}
	return n, nil
}

// Enter is the argv prefix that runs a command in the node's namespace.
func (n *Node) Enter() []string { return []string{"nsenter", "--net=" + Path(n.Name), "--"} }

// LinkDown takes the node's link down: nothing it sends leaves, nothing
// sent to it arrives, and neither end is told.
func (n *Node) LinkDown() error { return ip("-n", n.Name, "link", "set", "eth0", "down") }

// LinkUp brings the link back.
func (n *Node) LinkUp() error { return ip("-n", n.Name, "link", "set", "eth0", "up") }

// CutOff drops, silently and both ways, the node's traffic with one
// address of the hub (Ceph's or the API server's); the rest flows.
func (n *Node) CutOff(peer net.IP) error {
	if err := ip("-n", n.Name, "rule", "add", "to", peer.String(), "blackhole"); err != nil {
		return err
	}
	return ip("rule", "add", "from", peer.String(), "to", n.IP.String(), "blackhole")
}

// Reconnect removes what CutOff added.
func (n *Node) Reconnect(peer net.IP) error {
	err := ip("-n", n.Name, "rule", "del", "to", peer.String(), "blackhole")
	if err2 := ip("rule", "del", "from", peer.String(), "to", n.IP.String(), "blackhole"); err == nil {
		err = err2
	}
	return err
}

// Remove kills what runs in the namespace and removes it with its veth pair
// and the hub's rules for it.
func (n *Node) Remove() {
	for _, peer := range []net.IP{n.hub.CephIP, n.hub.APIServerIP} {
		for ip("rule", "del", "from", peer.String(), "to", n.IP.String(), "blackhole") == nil {
		}
	}
	removeNamespace(n.Name)
}
