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

// Command rbd-shim is the "rbd" on a test node's PATH. This machine has no
// kernel rbd module, so it does what only the kernel can do in its place and
// passes every other call to the real rbd:
//
//   - map: runs the real "rbd map" with the same arguments first and requires
//     it to fail at the kernel step, so the real CLI validates every argv;
//     then opens the image in one of the node's krbd clients
//     (krbd_client.py: one librados instance, so one client id and one
//     address; a read-write open is its watch, and blocklisting it fails
//     the I/O of every image mapped through it), which serves it as a file
//     in its FUSE mount; puts a loop device over that file, and makes what
//     the RBD plugin looks for: the sysfs entry
//     /sys/bus/rbd/devices/N/{pool,name,client_id,client_addr,config_info}
//     (on the node's own tmpfs at /sys/bus) and the block device /dev/rbdN
//     (N is the loop device's number, unique on the machine). As krbd
//     does, maps without "-o noshare" share the node's client for their
//     user, monitors, secret and libceph options; a noshare map gets a
//     client of its own.
//   - unmap (by device or by pool/image): reverses it: the image is closed
//     in its client (its watch goes), and the client stops with its last
//     mapping. Where a fenced client does not let go of the device, the
//     shim aborts the client's FUSE connection after 10 s, as krbd fails a
//     blocklisted client's I/O.
//
// Called as "ceph" it passes everything to the real ceph; called as one of
// the tools that open a block device (mount, umount, fsck, mkfs.ext4,
// blkid), it runs the first one of that name on PATH after itself. Every
// call goes to $RBD_SHIM_STATE/calls.jsonl (package calllog): its start,
// its end and exit status, and what it names (verbs, image, device,
// options, a fenced address; never a key), and every mapping made or
// removed with its client. The suite's verdict is computed from these.
//
// State lives in $RBD_SHIM_STATE (one directory per node).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/calllog"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/ceph"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/kubelet"
	"github.com/kube-rbd-failover/kube-rbd-failover/test/e2e/framework/process"
)

const (
	realRbd   = "/usr/bin/rbd"
	realCeph  = "/usr/bin/ceph"
	sysfsRoot = "/sys/bus/rbd/devices"
)

// mapping is what one map made.
type mapping struct {
	Pool  string `json:"pool"`
	Image string `json:"image"`
	Loop  string `json:"loop"`
	// Mount is the krbd client's FUSE mount, File the image's file in it.
	Mount string `json:"mount"`
	File  string `json:"file"`
	// ClientDir is the krbd client's directory (krbdClient.Dir).
	ClientDir string `json:"clientDir"`
	// FusePid is the krbd client's process.
	FusePid int `json:"fusePid"`
	// ShimPid and ShimStart (its start time) are the map's process, while
	// the mapping is pending; 0 once the map gave up on it.
	ShimPid   int    `json:"shimPid,omitempty"`
	ShimStart uint64 `json:"shimStart,omitempty"`
	// FuseConn names the client's FUSE connection
	// (/sys/fs/fuse/connections/N): a teardown aborts it before it kills
	// the client, or I/O of a fenced or frozen client would hang in the
	// kernel for good.
	FuseConn uint32 `json:"fuseConn"`
	Client   uint64 `json:"client"`
	// Address is the client's, as a blocklist names it.
	Address  string `json:"address"`
	ReadOnly bool   `json:"readOnly"`

	// sharedClient: other mappings of the node go through its client.
	sharedClient bool
}

func main() {
	args := os.Args[1:]
	state := os.Getenv("RBD_SHIM_STATE")
	tool := filepath.Base(os.Args[0])
	var real string
	switch tool {
	case "ceph":
		real = realCeph
	case "mount", "umount", "fsck", "mkfs.ext4", "blkid":
		real = nextOnPath(tool)
	default:
		tool, real = "rbd", realRbd
	}
	if state != "" {
		// A call the log cannot hold does not run: the verdict would miss it.
		if err := logStart(state, tool, args); err != nil {
			fmt.Fprintf(os.Stderr, "rbd-shim: %v\n", err)
			os.Exit(1)
		}
	}
	if tool == "rbd" && state != "" && isHolderRecordWrite(args) {
		holdRecord(state)
	}
	if tool == "rbd" && len(args) > 0 && state != "" {
		switch args[0] {
		case "map":
			dev, err := mapImage(state, args)
			if err != nil {
				fmt.Fprintf(os.Stderr, "rbd: %v\n", err)
				exit(state, 1)
			}
			fmt.Println(dev)
			exit(state, 0)
		case "unmap":
			if len(args) < 2 {
				break
			}
			if err := unmap(state, args[1]); err != nil {
				fmt.Fprintf(os.Stderr, "rbd: %v\n", err)
				exit(state, 1)
			}
			exit(state, 0)
		}
	}
	if real == "" {
		fmt.Fprintf(os.Stderr, "rbd-shim: no %s on PATH after the shim\n", tool)
		exit(state, 127)
	}
	// A child, not an exec: the end and the exit status go in the log.
	cmd := exec.Command(real, args...)
	cmd.Args[0] = tool
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	status := 0
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		switch {
		case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
			status = exitErr.ExitCode()
		case errors.As(err, &exitErr):
			// Killed by a signal: as a shell reports it.
			status = 128 + int(exitErr.Sys().(syscall.WaitStatus).Signal())
		default:
			fmt.Fprintf(os.Stderr, "rbd-shim: run %s: %v\n", real, err)
			status = 127
		}
	}
	exit(state, status)
}

// exit logs the end of this call with status and exits with it.
func exit(state string, status int) {
	if state != "" {
		_ = appendEntry(state, calllog.Entry{Pid: os.Getpid(), Kind: calllog.End, Status: status})
	}
	os.Exit(status)
}

// nextOnPath is the first tool on PATH that is not this shim.
func nextOnPath(tool string) string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	self, _ = filepath.EvalSymlinks(self)
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		path := filepath.Join(dir, tool)
		resolved, err := filepath.EvalSymlinks(path)
		if err != nil || resolved == self {
			continue
		}
		if fi, err := os.Stat(resolved); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path
		}
	}
	return ""
}

// holderPrefix starts the metadata keys of the plugin's holder records.
const holderPrefix = "kubernetes.io/rbd-fence.holder."

// isHolderRecordWrite reports whether args write a holder record.
func isHolderRecordWrite(args []string) bool {
	return len(args) > 3 && args[0] == "image-meta" && args[1] == "set" && strings.HasPrefix(args[3], holderPrefix)
}

// holdRecord waits, while the test holds record writes, between the map
// and the record: the test freezes the node there.
func holdRecord(state string) {
	hold := filepath.Join(state, kubelet.HoldRecordFile)
	if _, err := os.Stat(hold); err != nil {
		return
	}
	logLine(state, "shim held a holder record write")
	// Its pid: the test may kill this call, as it kills the kubelet.
	_ = os.WriteFile(filepath.Join(state, kubelet.RecordHeldFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
	for {
		if _, err := os.Stat(hold); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = os.Remove(filepath.Join(state, kubelet.RecordHeldFile))
	logLine(state, "shim released a holder record write")
}

// redact hides a key given on argv (the stock plugin's --key=…).
func redact(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.HasPrefix(a, "--key=") {
			a = "--key=<redacted>"
		}
		out[i] = a
	}
	return out
}

// callVerbs is how many leading words of a call name it ("rbd image-meta
// set", "ceph osd blocklist add"); what follows may be a key.
const callVerbs = 3

// startEntry is what the log says of a call: its verbs (no argument that
// could hold a key) and what it names.
func startEntry(tool string, args []string) calllog.Entry {
	e := calllog.Entry{Pid: os.Getpid(), Kind: calllog.Start, Tool: tool}
	switch tool {
	case "rbd", "ceph":
		var words []string
		for _, a := range args {
			if len(words) >= callVerbs || strings.HasPrefix(a, "-") || strings.ContainsAny(a, "/=:") {
				break
			}
			words = append(words, a)
		}
		e.Verbs = strings.Join(words, " ")
		if tool == "rbd" && len(args) > 0 && (args[0] == "map" || args[0] == "unmap") {
			e.Verbs = args[0]
		}
	}
	switch {
	case tool == "rbd" && e.Verbs == "map":
		if m, err := parseMap(args); err == nil {
			e.Image, e.Options, e.ReadOnly = m.pool+"/"+m.image, m.options, m.readOnly
		}
	case tool == "rbd" && e.Verbs == "unmap" && len(args) > 1:
		if strings.HasPrefix(args[1], "/dev/") {
			e.Device = args[1]
		} else {
			e.Image = args[1]
		}
	case tool == "ceph" && (e.Verbs == "osd blocklist add" || e.Verbs == "osd blacklist add") && len(args) > 3:
		// A blocklist names the client it fences: an address, no secret.
		e.Address = args[3]
	case tool != "rbd" && tool != "ceph":
		// The tools that open a device name it; mount's last argument is
		// where it goes.
		for _, a := range args {
			if strings.HasPrefix(a, "/dev/") && e.Device == "" {
				e.Device = a
			}
		}
		if tool == "mount" && len(args) > 0 {
			e.Target = args[len(args)-1]
		}
		if tool == "umount" && len(args) > 0 && e.Device == "" {
			e.Target = args[len(args)-1]
		}
	}
	return e
}

// logStart logs the start of this call.
func logStart(state, tool string, args []string) error {
	return appendEntry(state, startEntry(tool, args))
}

// logLine logs a note of the shim's own.
func logLine(state, what string) {
	_ = appendEntry(state, calllog.Entry{Kind: calllog.Note, What: what})
}

// appendEntry adds e to the node's call log. A log that cannot be written
// is also said on stderr.
func appendEntry(state string, e calllog.Entry) error {
	err := calllog.Append(filepath.Join(state, calllog.FileName), e)
	if err != nil {
		err = fmt.Errorf("call log: %w", err)
		fmt.Fprintf(os.Stderr, "rbd-shim: %v\n", err)
	}
	return err
}

// mapArgs is what the shim needs from a map's argv.
type mapArgs struct {
	pool, image, id, mon, keyfile, keyring, options string
	// key is a key given on argv (--key=…): the stock plugin does that.
	key      string
	readOnly bool
}

func parseMap(args []string) (mapArgs, error) {
	var m mapArgs
	for i := 1; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case a == "--id":
			m.id = next()
		case strings.HasPrefix(a, "--id="):
			m.id = strings.TrimPrefix(a, "--id=")
		case a == "-m":
			m.mon = next()
		case strings.HasPrefix(a, "--keyfile="):
			m.keyfile = strings.TrimPrefix(a, "--keyfile=")
		case strings.HasPrefix(a, "--key="):
			m.key = strings.TrimPrefix(a, "--key=")
		case a == "-k" || a == "--keyring":
			m.keyring = next()
		case a == "-o" || a == "--options":
			m.options = next()
		case a == "--read-only":
			m.readOnly = true
		case a == "--pool":
			m.pool = next()
		case strings.HasPrefix(a, "-"):
			// Options with values of their own are joined with "=" by the plugin.
		default:
			if m.image == "" {
				m.image = a
			}
		}
	}
	if p, img, ok := strings.Cut(m.image, "/"); ok {
		m.pool, m.image = p, img
	}
	if m.pool == "" || m.image == "" || m.mon == "" {
		return m, fmt.Errorf("rbd-shim: cannot read pool, image and monitors from %q", redact(args))
	}
	return m, nil
}

func mapImage(state string, args []string) (string, error) {
	out, err := exec.Command(realRbd, args...).CombinedOutput()
	if checkErr := ceph.CheckMapFailedAtKernel(out, err); checkErr != nil {
		return "", checkErr
	}
	m, err := parseMap(args)
	if err != nil {
		return "", err
	}
	cred := []string{"--id", m.id, "-m", m.mon}
	if m.key != "" && m.keyfile == "" {
		// The shim's own calls keep the key off their argv: a file that
		// lives until the krbd client has read it.
		f, err := os.CreateTemp(state, "key-")
		if err != nil {
			return "", err
		}
		defer os.Remove(f.Name())
		_, err = f.WriteString(m.key)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
		m.keyfile = f.Name()
	}
	if m.keyfile != "" {
		cred = append(cred, "--keyfile="+m.keyfile)
	} else if m.keyring != "" {
		cred = append(cred, "-k", m.keyring)
	}
	if strings.ContainsAny(m.pool+m.image, " \t\n") {
		return "", fmt.Errorf("rbd-shim: cannot map %q/%q: a name with white space", m.pool, m.image)
	}
	secret, err := credentialSecret(m)
	if err != nil {
		return "", err
	}
	key := clientKey(m, secret)
	if key == "" {
		key = fmt.Sprintf("%s%d-%d", noshare, os.Getpid(), time.Now().UnixNano())
	}
	sweepKilledMaps(state)
	lock, err := lockClient(state, key)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	dir := filepath.Join(state, "clients", key)
	c, running, err := readClient(state, dir, "")
	switch {
	case err != nil:
		return "", err
	case !running:
		if c, err = startClient(state, dir, m, m.keyfile); err != nil {
			return "", err
		}
	}
	file := fmt.Sprintf("%s.%s.%d", m.pool, m.image, time.Now().UnixNano())
	// Recorded before the client opens the image: if this call is killed
	// (the kubelet's deadline), the next map through the client, or the
	// teardown, undoes what it made.
	pending := filepath.Join(state, fmt.Sprintf("pending-%s-%s.json", key, file))
	started, _ := process.StartTime(os.Getpid())
	rec := mapping{Pool: m.pool, Image: m.image, Mount: c.mount(), FusePid: c.Pid, FuseConn: c.FuseConn, ClientDir: c.Dir, File: file,
		ShimPid: os.Getpid(), ShimStart: started}
	if err := saveJSON(pending, rec); err != nil {
		stopIfUnused(state, c, "")
		return "", err
	}
	undo := func() {
		detachLoops(filepath.Join(c.mount(), file))
		if _, err := c.request("unmap "+file, fuseBound); err != nil {
			// Left for the next map's sweep: the image may be open.
			rec.ShimPid, rec.ShimStart = 0, 0
			_ = saveJSON(pending, rec)
			return
		}
		_ = os.Remove(pending)
		stopIfUnused(state, c, "")
	}
	mode := "rw"
	if m.readOnly {
		mode = "ro"
	}
	if _, err := c.request(fmt.Sprintf("map %s %s %s %s", m.pool, m.image, mode, file), time.Minute); err != nil {
		undo()
		return "", err
	}
	losetup := []string{"-f", "--show"}
	if m.readOnly {
		losetup = append(losetup, "-r")
	}
	loopOut, err := exec.Command("losetup", append(losetup, filepath.Join(c.mount(), file))...).CombinedOutput()
	if err != nil {
		undo()
		return "", fmt.Errorf("losetup: %v: %s (no free loop device?)", err, bytes.TrimSpace(loopOut))
	}
	loop := strings.TrimSpace(string(loopOut))
	rec.Loop = loop
	n, err := strconv.Atoi(strings.TrimPrefix(loop, "/dev/loop"))
	if err == nil {
		err = saveJSON(pending, rec)
	} else {
		err = fmt.Errorf("losetup gave %q", loop)
	}
	var client uint64
	var address string
	if err == nil {
		client, address, err = c.clientID()
	}
	if err == nil && !m.readOnly {
		err = watchedBy(m, cred, client, address)
	}
	if err != nil {
		undo()
		return "", err
	}
	mp := mapping{Pool: m.pool, Image: m.image, Loop: loop, Mount: c.mount(), FusePid: c.Pid, FuseConn: c.FuseConn,
		ClientDir: c.Dir, File: file, Client: client, Address: address, ReadOnly: m.readOnly}
	dev := fmt.Sprintf("/dev/rbd%d", n)
	// Logged before the device and its record appear: nothing sees a
	// mapping the log does not hold, and one it cannot hold is not made.
	mapped := calllog.Entry{Pid: os.Getpid(), Kind: calllog.Mapped, Device: dev, Image: m.pool + "/" + m.image,
		Client: client, Address: address, Options: m.options, ReadOnly: m.readOnly}
	err = appendEntry(state, mapped)
	if err == nil {
		if err = publish(state, n, mp, m); err != nil {
			unmapped := mapped
			unmapped.Kind, unmapped.Options = calllog.Unmapped, ""
			_ = appendEntry(state, unmapped)
		}
	}
	if err != nil {
		_ = os.RemoveAll(filepath.Join(sysfsRoot, strconv.Itoa(n)))
		_ = os.Remove(dev)
		undo()
		return "", err
	}
	_ = os.Remove(pending)
	return dev, nil
}

// sweepKilledMaps undoes what maps killed before they recorded their
// mapping left (the kubelet's deadline kills a map's process group): their
// loop device, and their image's file in its client, which would stay
// open and watched. A map's pending record names its process; one whose
// process is gone is undone under its client's lock.
func sweepKilledMaps(state string) {
	records, _ := filepath.Glob(filepath.Join(state, "pending-*.json"))
	for _, pending := range records {
		var mp mapping
		if data, err := os.ReadFile(pending); err != nil || json.Unmarshal(data, &mp) != nil || mp.ClientDir == "" ||
			mapRuns(mp) {
			continue
		}
		lock, err := lockClient(state, filepath.Base(mp.ClientDir))
		if err != nil {
			continue
		}
		if _, err := os.Stat(pending); err == nil {
			undoKilledMap(state, pending, mp)
		}
		lock.Close()
	}
}

// mapRuns reports whether the map that wrote pending record mp still runs
// (its pid, started when the record says: not a reused pid).
func mapRuns(mp mapping) bool {
	if mp.ShimPid <= 0 || !process.Alive(mp.ShimPid) {
		return false
	}
	started, err := process.StartTime(mp.ShimPid)
	return err == nil && started == mp.ShimStart
}

// undoKilledMap undoes the map pending records; the caller holds its
// client's lock.
func undoKilledMap(state, pending string, mp mapping) {
	if len(mappingsOf(state, mp.ClientDir, mp.File)) > 0 {
		// Killed after its device was published: the mapping stands.
		_ = os.Remove(pending)
		return
	}
	// Found by its backing file: the map may have been killed before it
	// recorded its loop device.
	detachLoops(filepath.Join(mp.Mount, mp.File))
	c, running, err := readClient(state, mp.ClientDir, "")
	if err != nil {
		return
	}
	if running {
		if _, err := c.request("unmap "+mp.File, fuseBound); err != nil {
			return
		}
		stopIfUnused(state, c, "")
	}
	_ = os.Remove(pending)
	logLine(state, fmt.Sprintf("shim undid a map of %s/%s killed before it recorded its device", mp.Pool, mp.Image))
}

// saveJSON writes v to path whole or not at all.
func saveJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// watchers returns the addresses of the clients watching the image, by id.
func watchers(m mapArgs, cred []string) (map[uint64]string, error) {
	args := append([]string{"status", m.pool + "/" + m.image, "--format=json"}, cred...)
	out, err := exec.Command(realRbd, args...).Output()
	if err != nil {
		return nil, fmt.Errorf("rbd status: %w", err)
	}
	var st struct {
		Watchers []struct {
			Client  uint64 `json:"client"`
			Address string `json:"address"`
		} `json:"watchers"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("rbd status %q: %w", out, err)
	}
	ids := map[uint64]string{}
	for _, w := range st.Watchers {
		ids[w.Client] = w.Address
	}
	return ids, nil
}

// watchedBy waits until client, at address, watches the image (its
// read-write open registered the watch) and fails if it does not.
func watchedBy(m mapArgs, cred []string, client uint64, address string) error {
	var last map[uint64]string
	for i := 0; i < 50; i++ {
		now, err := watchers(m, cred)
		if err == nil && now[client] != "" {
			if now[client] != address {
				return fmt.Errorf("rbd status shows client %d at %s, the krbd client says %s", client, now[client], address)
			}
			return nil
		}
		last = now
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the krbd client's watch (client %d) on %s/%s did not show in rbd status (watchers %v)", client, m.pool, m.image, last)
}

// credentialSecret is what the map authenticates with: the key, or the
// keyring's content.
func credentialSecret(m mapArgs) ([]byte, error) {
	switch {
	case m.keyfile != "":
		return os.ReadFile(m.keyfile)
	case m.keyring != "":
		return os.ReadFile(m.keyring)
	}
	return nil, nil
}

// stopIfUnused stops client c if no mapping of the node but the one
// recorded in except goes through it. The caller holds the client's lock.
func stopIfUnused(state string, c *krbdClient, except string) {
	if !othersThrough(state, c.Dir, except) {
		_ = c.stop(state)
	}
}

// othersThrough reports whether a mapping of the node other than the one
// recorded in except goes through the client in dir.
func othersThrough(state, dir, except string) bool {
	for _, rec := range mappingsOf(state, dir, "") {
		if rec != except {
			return true
		}
	}
	return false
}

// detachLoops detaches every loop device over file (the machine's loop
// devices are shared by all nodes: one is detached only if it is over
// this file).
func detachLoops(file string) {
	for _, loop := range loopsOver(file) {
		_ = exec.Command("losetup", "-d", loop).Run()
	}
}

// loopsOver returns the loop devices whose backing file is file.
func loopsOver(file string) []string {
	var loops []string
	paths, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil && strings.TrimSuffix(strings.TrimSpace(string(data)), " (deleted)") == file {
			loops = append(loops, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(p))))
		}
	}
	return loops
}

// loopIsOver reports whether loop is attached over file.
func loopIsOver(loop, file string) bool {
	for _, l := range loopsOver(file) {
		if l == loop {
			return true
		}
	}
	return false
}

// mappingsOf returns the records of the node's mappings made through the
// client in dir (of its file, if file is not "").
func mappingsOf(state, dir, file string) []string {
	var through []string
	records, _ := filepath.Glob(filepath.Join(state, "rbd*.json"))
	for _, rec := range records {
		var mp mapping
		if data, err := os.ReadFile(rec); err == nil && json.Unmarshal(data, &mp) == nil && mp.ClientDir == dir &&
			(file == "" || mp.File == file) {
			through = append(through, rec)
		}
	}
	return through
}

// publish makes the sysfs entry and the device node, and records the mapping.
func publish(state string, n int, mp mapping, m mapArgs) error {
	dir := filepath.Join(sysfsRoot, strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("the node's /sys/bus is not its own tmpfs: %w", err)
	}
	opts := "name=" + m.id
	if m.options != "" {
		opts += "," + m.options
	}
	if m.readOnly {
		opts += ",read_only"
	}
	for name, value := range map[string]string{
		"pool": mp.Pool, "name": mp.Image, "current_snap": "-",
		"client_id":   fmt.Sprintf("client%d", mp.Client),
		"client_addr": mp.Address,
		"config_info": fmt.Sprintf("%s %s %s %s -", m.mon, opts, mp.Pool, mp.Image),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(value+"\n"), 0o644); err != nil {
			return err
		}
	}
	dev := fmt.Sprintf("/dev/rbd%d", n)
	var loopStat syscall.Stat_t
	if err := syscall.Stat(mp.Loop, &loopStat); err != nil {
		return fmt.Errorf("stat %s: %w", mp.Loop, err)
	}
	// The loop device's own device number, whatever its minor numbering.
	if err := syscall.Mknod(dev, syscall.S_IFBLK|0o660, int(loopStat.Rdev)); err != nil {
		return fmt.Errorf("mknod %s (is a device of that name left over?): %w", dev, err)
	}
	return saveJSON(filepath.Join(state, fmt.Sprintf("rbd%d.json", n)), mp)
}

func unmap(state, target string) error {
	// Found again under the client's lock: another unmap of the same
	// device may have gone first, and a new map reused its number.
	for attempt := 0; attempt < 3; attempt++ {
		rec, mp, ok := findMapping(state, target)
		if !ok {
			break
		}
		// krbd refuses to unmap a device that is open (mounted); losetup -d
		// would only mark it to go at the last close. A loop device that is
		// no longer over this mapping's file (a retry after the detach) may
		// be another node's now.
		if loopIsOver(mp.Loop, filepath.Join(mp.Mount, mp.File)) {
			f, err := os.OpenFile(mp.Loop, os.O_RDONLY|syscall.O_EXCL, 0)
			if err != nil {
				return fmt.Errorf("rbd: sysfs write failed\nrbd: unmap failed: (16) Device or resource busy (%v)", err)
			}
			f.Close()
		}
		lock, err := lockClient(state, filepath.Base(mp.ClientDir))
		if err != nil {
			return err
		}
		if again, now, ok := findMapping(state, target); !ok || again != rec || now != mp {
			lock.Close()
			continue
		}
		err = unmapLocked(state, rec, mp)
		lock.Close()
		return err
	}
	return fmt.Errorf("rbd: %s: not a mapped image or snapshot", target)
}

// findMapping returns the record of the node's mapping target names (a
// device or pool/image).
func findMapping(state, target string) (string, mapping, bool) {
	records, _ := filepath.Glob(filepath.Join(state, "rbd*.json"))
	for _, rec := range records {
		data, err := os.ReadFile(rec)
		if err != nil {
			continue
		}
		var mp mapping
		if json.Unmarshal(data, &mp) != nil {
			continue
		}
		n := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(rec), "rbd"), ".json")
		if target == "/dev/rbd"+n || target == mp.Pool+"/"+mp.Image {
			return rec, mp, true
		}
	}
	return "", mapping{}, false
}

// unmapLocked removes the mapping recorded in rec; the caller holds its
// client's lock. Each step is skipped if done: a retry after a failed
// unmap goes on where that one stopped.
func unmapLocked(state, rec string, mp mapping) error {
	n := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(rec), "rbd"), ".json")
	if loopIsOver(mp.Loop, filepath.Join(mp.Mount, mp.File)) {
		// Other mappings through the client: its FUSE connection is theirs
		// too, and is aborted for none of them.
		mp.sharedClient = othersThrough(state, mp.ClientDir, rec)
		if err := boundedByFuse(state, mp, "losetup", "-d", mp.Loop); err != nil {
			return err
		}
	}
	if err := unmapFromClient(state, rec, mp); err != nil {
		return err
	}
	_ = os.RemoveAll(filepath.Join(sysfsRoot, n))
	_ = os.Remove("/dev/rbd" + n)
	if err := os.Remove(rec); err != nil {
		return err
	}
	// The device is gone whether or not the log holds that: an entry it
	// misses leaves the mapping open in the verdict (a failure there).
	_ = appendEntry(state, calllog.Entry{Pid: os.Getpid(), Kind: calllog.Unmapped, Device: "/dev/rbd" + n,
		Image: mp.Pool + "/" + mp.Image, Client: mp.Client, Address: mp.Address, ReadOnly: mp.ReadOnly})
	return nil
}

// unmapFromClient closes the image in its krbd client (its watch goes),
// and stops the client if no other mapping of the node goes through it.
// The client answers within its own bound however its close goes; one
// that does not answer is frozen or dead. With other mappings through it
// the unmap fails and may be retried; with none, the client is ended (its
// FUSE connection aborted first), and the call log says so.
func unmapFromClient(state, rec string, mp mapping) error {
	others := othersThrough(state, mp.ClientDir, rec)
	c, running, err := readClient(state, mp.ClientDir, rec)
	if err != nil {
		return fmt.Errorf("rbd: sysfs write failed\nrbd: unmap failed: %v", err)
	}
	if running {
		if _, err := c.request("unmap "+mp.File, fuseBound); err != nil {
			if others {
				return fmt.Errorf("rbd: sysfs write failed\nrbd: unmap failed: the krbd client of %s did not answer: %v", mp.Address, err)
			}
			_ = appendEntry(state, calllog.Entry{Kind: calllog.Note, Address: mp.Address,
				What: fmt.Sprintf("shim aborted the krbd client (unmap: %v) of client %s", err, mp.Address)})
			c.discard()
			return nil
		}
	}
	if others || !running {
		// readClient discarded a client that does not serve.
		return nil
	}
	return c.stop(state)
}

// mounted reports whether something is mounted at dir, from the mount
// table: a stat of dir would be a FUSE request, which a stuck krbd client
// never answers.
func mounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == dir {
			return true
		}
	}
	return false
}

// fuseBound is how long a step of an unmap may wait on the krbd client.
const fuseBound = 10 * time.Second

// boundedByFuse runs a step of an unmap (the loop device's detach, the
// FUSE unmount) that waits on the krbd client. It may never answer for a
// client that has been blocklisted (its librbd may wait for good), which
// would hold the step in the kernel, while krbd fails a blocklisted
// client's I/O and lets go of the device. So past fuseBound the client's
// FUSE connection is aborted (every request on it fails) and the step
// goes on; the node's call log says so, naming the client (the suite
// fails a run in which the client was not blocklisted).
func boundedByFuse(state string, mp mapping, argv ...string) error {
	done := make(chan error, 1)
	go func() {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("rbd: sysfs write failed\n%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(fuseBound):
	}
	if mp.FuseConn == 0 || mp.sharedClient {
		return fmt.Errorf("rbd: sysfs write failed\n%s: no answer from the krbd client within %v", strings.Join(argv, " "), fuseBound)
	}
	_ = appendEntry(state, calllog.Entry{Kind: calllog.Note, What: fmt.Sprintf("shim aborted the krbd client (%s) of client %s", argv[0], mp.Address),
		Address: mp.Address})
	kubelet.AbortFuse(mp.FuseConn)
	select {
	case err := <-done:
		return err
	case <-time.After(fuseBound):
		return fmt.Errorf("rbd: sysfs write failed\n%s: stuck %v after the krbd client's connection was aborted", strings.Join(argv, " "), fuseBound)
	}
}

// fuseConnection returns the number of the FUSE connection mounted at mnt
// (/sys/fs/fuse/connections/N): the minor of the mount's device.
func fuseConnection(mnt string) (uint32, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		// "36 35 0:41 / /mnt/point rw,... - fuse krbd-client rw,..."
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != mnt {
			continue
		}
		_, minor, ok := strings.Cut(f[2], ":")
		if !ok {
			break
		}
		n, err := strconv.ParseUint(minor, 10, 32)
		if err != nil {
			break
		}
		return uint32(n), nil
	}
	return 0, fmt.Errorf("no FUSE mount at %s in /proc/self/mountinfo", mnt)
}
