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

// Command fake-cri serves upstream's fake container runtime
// (k8s.io/kubernetes/pkg/kubelet/cri/remote/fake) on a unix socket, so that
// a real kubelet runs pods without containers: sandboxes and containers are
// records, and volumes are set up and torn down by the kubelet for real.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/kubernetes/pkg/kubelet/cri/remote/fake"
)

func main() {
	endpoint := flag.String("endpoint", "", "unix:///path/to/cri.sock to serve")
	images := flag.String("images", "registry.k8s.io/pause:3.9", "comma-separated images the runtime reports as present")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "fake-cri: --endpoint is required")
		os.Exit(2)
	}
	runtime := fake.NewFakeRemoteRuntime()
	// The kubelet refuses images without an id and a size.
	runtime.ImageService.SetFakeImageSize(1 << 20)
	runtime.ImageService.SetFakeImages(strings.Split(*images, ","))
	if err := runtime.Start(*endpoint); err != nil {
		fmt.Fprintf(os.Stderr, "fake-cri: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("fake-cri: serving %s\n", *endpoint)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	runtime.Stop()
}
