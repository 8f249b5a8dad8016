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
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tests of what a run leaves behind; they run after the scenarios (Go
// runs the files in name order, and this one comes last).

// TestCephKeyInNoLog reads every log the run wrote for the cephx key: the
// kubelets' (at --v=4, stock and patched), the runtimes', the control
// plane's, Ceph's, and on each node the shim's call log and its clients'.
func TestCephKeyInNoLog(t *testing.T) {
	if env.cluster == nil || env.cluster.UserKey == "" {
		t.Fatal("no cluster key to look for")
	}
	logs, kubeletLogs := 0, 0
	for _, dir := range []string{env.dir, nodesDir} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				// The daemons' data stores, not logs: the monitor's RocksDB
				// names its write-ahead files *.log and deletes them at will.
				if path == filepath.Join(env.dir, "ceph", "mon") || path == filepath.Join(env.dir, "ceph", "osd") {
					return fs.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".log") && !strings.HasSuffix(path, ".out") && !strings.HasSuffix(path, ".jsonl") {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			logs++
			if strings.HasPrefix(d.Name(), "kubelet-") {
				kubeletLogs++
			}
			// As it is, and as a logged Secret's data would show it.
			for _, form := range []string{env.cluster.UserKey, base64.StdEncoding.EncodeToString([]byte(env.cluster.UserKey))} {
				if strings.Contains(string(data), form) {
					t.Errorf("the cephx key is in %s", path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if kubeletLogs < 2 {
		t.Fatalf("read only %d kubelet logs (of %d logs)", kubeletLogs, logs)
	}
	t.Logf("the cephx key is in none of %d log files (%d of them kubelets')", logs, kubeletLogs)
}

// TestHostRootUntouched: the host's / has what it had when the suite
// started. A kubelet whose working directory was / once removed /bin (it
// removes a removed container's log path with "*" appended, and upstream's
// fake runtime gives none).
func TestHostRootUntouched(t *testing.T) {
	if env.rootEntries == nil {
		t.Fatal("the entries of / were not read at the start")
	}
	now, err := rootEntries()
	if err != nil {
		t.Fatal(err)
	}
	for name := range env.rootEntries {
		if !now[name] {
			t.Errorf("/%s is gone since the suite started", name)
		}
	}
}

// rootEntries are the names in the host's /.
func rootEntries() (map[string]bool, error) {
	entries, err := os.ReadDir("/")
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names, nil
}
