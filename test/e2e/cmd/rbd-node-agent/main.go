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

// Command rbd-node-agent is one simulated node of the control-plane
// end-to-end tests (see package nodeagent). SIGUSR1 partitions it from the
// API server while it keeps its Ceph mappings; SIGKILL to its process group
// is a power cut (the agent and its librbd clients die together).
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/nodeagent"
)

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	node := flag.String("node", "", "name of the Node to register")
	dir := flag.String("dir", "", "directory for the agent's state, keys and plugin files")
	cephConf := flag.String("ceph-conf", "", "ceph.conf naming the monitors, for the librbd client that stands in for the kernel mapping")
	heartbeat := flag.Duration("heartbeat", time.Second, "how often the Lease and the Ready condition are renewed")
	sync := flag.Duration("sync", 500*time.Millisecond, "how often pods and the Node are read")
	kubeletVersion := flag.String("kubelet-version", "", "the kubelet version the Node reports")
	appOffset := flag.Int64("app-offset", 0, "where on an image the application writes its records")
	flag.Parse()
	if *kubeconfig == "" || *node == "" || *dir == "" || *cephConf == "" {
		klog.Error("--kubeconfig, --node, --dir and --ceph-conf are required")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.ErrorS(err, "Cannot load the kubeconfig")
		os.Exit(1)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		klog.ErrorS(err, "Cannot create the client")
		os.Exit(1)
	}
	agent, err := nodeagent.New(nodeagent.Config{Client: client, Node: *node, Dir: *dir, CephConf: *cephConf,
		Heartbeat: *heartbeat, Sync: *sync, KubeletVersion: *kubeletVersion, AppOffset: *appOffset})
	if err != nil {
		klog.ErrorS(err, "Cannot start the node agent")
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	partition := make(chan os.Signal, 1)
	signal.Notify(partition, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range partition {
			if sig == syscall.SIGUSR1 {
				agent.Partition()
			} else {
				agent.Heal()
			}
		}
	}()
	if err := agent.Run(ctx); err != nil {
		klog.ErrorS(err, "Node agent failed")
		os.Exit(1)
	}
}
