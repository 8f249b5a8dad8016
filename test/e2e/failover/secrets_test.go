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

package failover

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCephKeyInNoLog reads every log the run wrote (control plane, node
// agents with the plugin's rbd calls, Ceph) for the cephx key. It runs after
// the scenarios (Go runs the files in name order).
func TestCephKeyInNoLog(t *testing.T) {
	if env.cluster == nil || env.cluster.UserKey == "" {
		t.Fatal("no cluster key to look for")
	}
	logs := 0
	err := filepath.WalkDir(env.dir, func(path string, d fs.DirEntry, err error) error {
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
		if !strings.HasSuffix(path, ".log") && !strings.HasSuffix(path, ".out") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		logs++
		if strings.Contains(string(data), env.cluster.UserKey) {
			t.Errorf("the cephx key is in %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if logs < 5 {
		t.Fatalf("read only %d log files under %s", logs, env.dir)
	}
	t.Logf("the cephx key is in none of %d log files", logs)
}
