# Copyright 2026 The kube-rbd-failover Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""One krbd client of a test node: a Ceph client (one librados instance,
so one client id and one address) through which rbd-shim maps images.

krbd keeps one Ceph client per node and set of options and maps every
image without noshare through it; with noshare each mapping gets its own.
rbd-shim starts one of these per such client. An image mapped through it is
opened here (so this client watches it, read-write only, as krbd since
5.3) and served as a file in the FUSE mount, for a loop device; an unmap
closes the image (and drops the watch). Blocklisting this client fails the
writes of every image mapped through it, as it does krbd's (reads may still
come from the page cache over the FUSE file).

Usage: krbd_client.py MOUNT SOCKET USER MONITORS keyfile=PATH|keyring=PATH
SOCKET is an abstract unix socket's name. Requests on it, one line per
connection, one line of answer:
  client                  -> ok CLIENT_ID ADDRESSES
  map POOL IMAGE rw|ro FILE  -> ok FILE SIZE (FILE named by the shim)
  unmap FILE              -> ok MAPPINGS_LEFT (also if FILE is gone)
  (any failure)           -> err TEXT
The process ends when MOUNT is unmounted.
"""

import errno
import os
import socket
import stat
import sys
import threading
import time

import llfuse
import rados
import rbd


class Mapping:
    def __init__(self, name, image, size, read_only):
        self.name, self.image, self.size, self.read_only = name, image, size, read_only
        # I/O under way with llfuse's lock released; the image is closed
        # only when none is (librbd must not close under a read or write).
        self.inflight = 0

    def io(self, op):
        """Runs op on the image with llfuse's lock released; the caller
        holds the lock."""
        self.inflight += 1
        try:
            with llfuse.lock_released:
                return op()
        finally:
            self.inflight -= 1


class ImageFiles(llfuse.Operations):
    """The mount's root holds one file per mapping."""

    def __init__(self):
        super().__init__()
        self.by_inode = {}
        self.by_name = {}
        self.next_inode = llfuse.ROOT_INODE + 1

    def add(self, mapping):
        inode = self.next_inode
        self.next_inode += 1
        self.by_inode[inode] = mapping
        self.by_name[mapping.name.encode()] = inode

    def remove(self, name):
        inode = self.by_name.pop(name.encode(), None)
        return self.by_inode.pop(inode, None)

    def _mapping(self, inode):
        m = self.by_inode.get(inode)
        if m is None:
            raise llfuse.FUSEError(errno.ENOENT)
        return m

    def _attr(self, inode):
        a = llfuse.EntryAttributes()
        a.st_ino = inode
        # No caching: a mapping's file goes with its unmap.
        a.entry_timeout = a.attr_timeout = 0
        if inode == llfuse.ROOT_INODE:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            m = self._mapping(inode)
            a.st_mode = stat.S_IFREG | (0o400 if m.read_only else 0o600)
            a.st_nlink, a.st_size = 1, m.size
        a.st_blksize = 4096
        a.st_blocks = (a.st_size + 511) // 512
        return a

    def getattr(self, inode, ctx=None):
        return self._attr(inode)

    def lookup(self, parent, name, ctx=None):
        if parent != llfuse.ROOT_INODE or name not in self.by_name:
            raise llfuse.FUSEError(errno.ENOENT)
        return self._attr(self.by_name[name])

    def opendir(self, inode, ctx):
        if inode != llfuse.ROOT_INODE:
            raise llfuse.FUSEError(errno.ENOTDIR)
        return inode

    def readdir(self, fh, off):
        entries = sorted(self.by_name.items())
        for i, (name, inode) in enumerate(entries[off:], off):
            yield name, self._attr(inode), i + 1

    def open(self, inode, flags, ctx):
        m = self._mapping(inode)
        if m.read_only and flags & os.O_ACCMODE != os.O_RDONLY:
            raise llfuse.FUSEError(errno.EROFS)
        return inode

    def read(self, fh, off, size):
        m = self._mapping(fh)
        if off >= m.size:
            return b""
        size = min(size, m.size - off)
        # librbd's I/O may wait on the OSDs: other requests go on meanwhile.
        try:
            return m.io(lambda: m.image.read(off, size))
        except Exception as e:  # a fenced client's I/O fails, as krbd's
            print("read %s: %s" % (m.name, e), file=sys.stderr, flush=True)
            raise llfuse.FUSEError(errno.EIO)

    def write(self, fh, off, buf):
        m = self._mapping(fh)
        if m.read_only:
            raise llfuse.FUSEError(errno.EROFS)
        if off + len(buf) > m.size:
            raise llfuse.FUSEError(errno.EIO)
        try:
            return m.io(lambda: m.image.write(buf, off))
        except Exception as e:
            print("write %s: %s" % (m.name, e), file=sys.stderr, flush=True)
            raise llfuse.FUSEError(errno.EIO)

    def fsync(self, fh, datasync):
        m = self._mapping(fh)
        try:
            m.io(m.image.flush)
        except Exception as e:
            print("flush %s: %s" % (m.name, e), file=sys.stderr, flush=True)
            raise llfuse.FUSEError(errno.EIO)

    def release(self, fh):
        pass

    def statfs(self, ctx):
        s = llfuse.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


class Client:
    def __init__(self, files, user, monitors, credential):
        self.files = files
        kind, path = credential.split("=", 1)
        if kind not in ("keyfile", "keyring"):
            raise ValueError("credential %r: want keyfile=PATH or keyring=PATH" % kind)
        # rbd_cache off: as with krbd, a write is acknowledged once the OSDs
        # have it. A 1 s objecter tick renews a healthy watch well inside the
        # lowered watch timeout on a loaded machine.
        self.cluster = rados.Rados(rados_id=user, conf={
            "mon_host": monitors, kind: path, "rbd_cache": "false",
            "objecter_tick_interval": "1", "client_mount_timeout": "30"})
        self.cluster.connect(timeout=30)
        self.ioctxs = {}
        # Maps and unmaps one at a time.
        self.changes = threading.Lock()

    def request(self, line):
        """Answers one request; map and unmap return an undo for an answer
        that never reached the shim."""
        words = line.split()
        if words == ["client"]:
            return "ok %d %s" % (self.cluster.get_instance_id(), self.cluster.get_addrs()), None
        if len(words) == 5 and words[0] == "map" and words[3] in ("rw", "ro"):
            pool, name, read_only, file = words[1], words[2], words[3] == "ro", words[4]
            with llfuse.lock:
                if file.encode() in self.files.by_name:
                    return "err %s is mapped already" % file, None
            ioctx = self.ioctxs.get(pool)
            if ioctx is None:
                ioctx = self.ioctxs[pool] = self.cluster.open_ioctx(pool)
            # A read-write open registers this client's watch on the image;
            # a read-only one does not, as krbd's since Linux 5.3.
            image = rbd.Image(ioctx, name, read_only=read_only)
            m = Mapping(file, image, image.size(), read_only)
            with llfuse.lock:
                self.files.add(m)
            return "ok %s %d" % (m.name, m.size), lambda: self.unmap(file)
        if len(words) == 2 and words[0] == "unmap":
            return "ok %d" % self.unmap(words[1]), None
        return "err unknown request %r" % line, None

    def unmap(self, file):
        """Removes file and closes its image; returns the mappings left. An
        unmap of a file already gone is done: a retry finds it so."""
        with llfuse.lock:
            m = self.files.remove(file)
            left = len(self.files.by_inode)
        if m is not None:
            # Flushes and drops the watch. Bounded: a close that waits on
            # the cluster goes on in the background and holds no other
            # mapping of this client, as krbd's unmap gives up on the
            # unwatch after its mount timeout.
            closer = threading.Thread(target=close_image, args=(m,), daemon=True)
            closer.start()
            closer.join(UNMAP_BOUND)
        return left

    def shutdown(self):
        with llfuse.lock:
            mappings = list(self.files.by_inode.values())
        try:
            for m in mappings:
                m.image.close()
            for ioctx in self.ioctxs.values():
                ioctx.close()
            self.cluster.shutdown()
        except Exception as e:
            print("shutdown: %s" % e, file=sys.stderr, flush=True)


# UNMAP_BOUND is how long an unmap waits for its image's close (seconds).
UNMAP_BOUND = 5


def close_image(m):
    # The file is gone, so no new I/O starts; what is under way ends first.
    while True:
        with llfuse.lock:
            if m.inflight == 0:
                break
        time.sleep(0.05)
    try:
        m.image.close()
    except Exception as e:  # a fenced client's close fails; the unmap is done
        print("close %s: %s" % (m.name, e), file=sys.stderr, flush=True)


def serve(client, listener):
    """Accepts requests until the listener closes, each on a thread of its
    own: a map that waits on the cluster holds no "client" request."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError as e:
            if listener.fileno() < 0:
                return
            print("accept: %s" % e, file=sys.stderr, flush=True)
            time.sleep(0.1)
            continue
        threading.Thread(target=answer, args=(client, conn), daemon=True).start()


def answer(client, conn):
    with conn:
        line, undo = "", None
        try:
            conn.settimeout(10)
            line = conn.makefile("r").readline()
            try:
                if line.startswith("client"):
                    reply, undo = client.request(line)
                else:
                    with client.changes:
                        reply, undo = client.request(line)
            except Exception as e:
                reply = "err %s: %s" % (type(e).__name__, str(e).replace("\n", " "))
            conn.sendall((reply + "\n").encode())
        except OSError as e:
            # The shim is gone (killed at the kubelet's deadline): what it
            # never heard of is undone, or it would stay open and watched.
            print("request %r: %s" % (line, e), file=sys.stderr, flush=True)
            if undo is not None:
                with client.changes:
                    undo()


def main():
    mount, sock_name, user, monitors, credential = sys.argv[1:6]
    files = ImageFiles()
    client = Client(files, user, monitors, credential)
    options = set(llfuse.default_options)
    options.add("fsname=krbd-client")
    llfuse.init(files, mount, options)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + sock_name)
    listener.listen(16)
    threading.Thread(target=serve, args=(client, listener), daemon=True).start()
    print("serving client %d" % client.cluster.get_instance_id(), file=sys.stderr, flush=True)
    try:
        # Several workers: a request that waits on the OSDs holds no other.
        llfuse.main(workers=8)
    finally:
        llfuse.close(unmount=True)
        listener.close()
    client.shutdown()


if __name__ == "__main__":
    main()
