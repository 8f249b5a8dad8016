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

// Command testreport reads "go test -json" on stdin, prints the tests' own
// output as go test would, and counts leaf tests (tests with no subtests).
// It writes "PASSED FAILED SKIPPED" to -counts and the failing leaf tests, one
// "package TestName/sub" a line, to -failed; -reasons gets the same lines,
// each followed by ": " and the test's first error line, so that a failure
// can be told from the last lines of a long log. A package that fails
// without a failing test (a build error, a panic) counts as one failure.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// errorLine matches what t.Error and t.Fatal print: "    file_test.go:12: msg".
var errorLine = regexp.MustCompile(`^\s+[\w.-]+\.go:\d+: \S`)

// maxReason bounds a reason line; the whole message is in the log above.
const maxReason = 240

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type result struct {
	leaves  map[string]string // test -> action, for every test seen
	reasons map[string]string // test -> its first error line
	panic   string            // the package's first "panic:" line
	pkgFail bool
}

func main() {
	countsPath := flag.String("counts", "", "write 'passed failed skipped' to this file")
	failedPath := flag.String("failed", "", "write failing leaf tests to this file")
	reasonsPath := flag.String("reasons", "", "write failing leaf tests with their first error line to this file")
	flag.Parse()

	results := map[string]*result{}
	get := func(pkg string) *result {
		r, ok := results[pkg]
		if !ok {
			r = &result{leaves: map[string]string{}, reasons: map[string]string{}}
			results[pkg] = r
		}
		return r
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			var ev event
			if json.Unmarshal(line, &ev) != nil || ev.Action == "" {
				// Not an event: build output printed as plain text.
				os.Stdout.Write(line)
			} else {
				handle(get(ev.Package), ev)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
			os.Exit(2)
		}
	}

	passed, failed, skipped := 0, 0, 0
	var failures, reasons []string
	pkgs := make([]string, 0, len(results))
	for pkg := range results {
		pkgs = append(pkgs, pkg)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		r := results[pkg]
		pkgFailures := 0
		for test, action := range r.leaves {
			if isParent(test, r.leaves) {
				continue
			}
			switch action {
			case "pass":
				passed++
			case "skip":
				skipped++
			default: // fail, or never finished (a panic or timeout)
				failed++
				pkgFailures++
				failures = append(failures, pkg+" "+test)
				reasons = append(reasons, withReason(pkg+" "+test, r.reasons[test], action, r.panic))
			}
		}
		if r.pkgFail && pkgFailures == 0 {
			failed++
			failures = append(failures, pkg+" (package)")
			reasons = append(reasons, withReason(pkg+" (package)", "", "fail", r.panic))
		}
	}
	sort.Strings(failures)
	sort.Strings(reasons)
	if *countsPath != "" {
		write(*countsPath, fmt.Sprintf("%d %d %d\n", passed, failed, skipped))
	}
	if *failedPath != "" {
		content := ""
		for _, f := range failures {
			content += f + "\n"
		}
		write(*failedPath, content)
	}
	if *reasonsPath != "" {
		write(*reasonsPath, strings.Join(append(reasons, ""), "\n"))
	}
}

// withReason is "name: reason", where the reason is the test's first error
// line, else the package's panic, else what became of the test.
func withReason(name, reason, action, panicLine string) string {
	switch {
	case reason != "":
	case panicLine != "":
		reason = panicLine
	case action == "fail":
		reason = "failed without an error line (see the log)"
	default:
		reason = "never finished (a panic or a timeout; see the log)"
	}
	if r := []rune(reason); len(r) > maxReason {
		reason = string(r[:maxReason]) + "…"
	}
	return name + ": " + reason
}

func handle(r *result, ev event) {
	switch ev.Action {
	case "output":
		fmt.Print(ev.Output)
		if ev.Test != "" && r.reasons[ev.Test] == "" && errorLine.MatchString(ev.Output) {
			r.reasons[ev.Test] = strings.TrimSpace(ev.Output)
		}
		if r.panic == "" && strings.HasPrefix(ev.Output, "panic: ") {
			r.panic = strings.TrimSpace(ev.Output)
		}
	case "run":
		if _, ok := r.leaves[ev.Test]; !ok {
			r.leaves[ev.Test] = "run"
		}
	case "pass", "fail", "skip":
		if ev.Test == "" {
			r.pkgFail = r.pkgFail || ev.Action == "fail"
			return
		}
		r.leaves[ev.Test] = ev.Action
	}
}

// isParent reports whether test has subtests among seen.
func isParent(test string, seen map[string]string) bool {
	prefix := test + "/"
	for other := range seen {
		if strings.HasPrefix(other, prefix) {
			return true
		}
	}
	return false
}

func write(path, content string) {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
		os.Exit(2)
	}
}
