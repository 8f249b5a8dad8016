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

// Package report is what the e2e suites share of their setting: the
// directory of a run, and the report each suite writes there, which
// hack/test-e2e.sh gathers into _output/e2e/report.md.
package report

import (
	"fmt"
	"os"
	"path/filepath"
)

// Dir is the run's directory: $E2E_DIR (hack/test-e2e.sh sets it), or
// kube-rbd-failover-e2e in the temporary directory. It must be absolute:
// the daemons run in directories of their own.
func Dir() (string, error) {
	dir := os.Getenv("E2E_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "kube-rbd-failover-e2e")
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("E2E_DIR=%q: want an absolute path", dir)
	}
	return dir, nil
}

// Writer writes one suite's report: <dir>/<suite>-report.md.
type Writer struct {
	path string
}

// New is the report of suite in the run's directory dir.
func New(dir, suite string) *Writer {
	return &Writer{path: filepath.Join(dir, suite+"-report.md")}
}

// Printf prints a line of the report on stdout (marked "E2E-REPORT: ", for
// the run's log) and appends it to the report's file.
func (w *Writer) Printf(format string, args ...interface{}) {
	line := fmt.Sprintf(format, args...)
	fmt.Print("E2E-REPORT: " + line)
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e report: %v\n", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		fmt.Fprintf(os.Stderr, "e2e report: %v\n", err)
	}
}
