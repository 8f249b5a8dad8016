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

package ceph

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// DefaultWatchTimeout is the osd_client_watch_timeout the e2e suites run
// with unless WATCH_TIMEOUT says otherwise (Ceph's own default is 30 s).
const DefaultWatchTimeout = 10 * time.Second

// WatchTimeoutFromEnv reads WATCH_TIMEOUT, in seconds.
func WatchTimeoutFromEnv() (time.Duration, error) {
	s := os.Getenv("WATCH_TIMEOUT")
	if s == "" {
		return DefaultWatchTimeout, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("WATCH_TIMEOUT=%q: want a number of seconds", s)
	}
	return time.Duration(n) * time.Second, nil
}

// Version returns the version the ceph CLI reports, e.g. "16.2.15".
func Version() string {
	out, err := exec.Command("ceph", "--version").Output()
	if f := strings.Fields(string(out)); err == nil && len(f) >= 3 {
		return f[2]
	}
	return "(unknown version)"
}
