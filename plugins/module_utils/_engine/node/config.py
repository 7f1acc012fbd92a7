# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Persisted container configuration and the per-container lock.

Layout under ``data_dir`` (default ``/var/lib/ovz``)::

    conf/<name>.json    the container's configuration (written atomically)
    private/<name>      its private area (an ext4 image or a directory)
    root/<name>         the mount point of its root filesystem
    dump/<name>         checkpoint images
    templates/          OS templates
    run/<name>/         runtime state (state.json, lock; volatile/: a small tmpfs with
                        guest/ and console.log, so a container cannot fill the host's disk)
    node.json           the data dir's identity on its host, while it holds containers (``HostLayout.node_id``)

Each data dir is a node of its own: the names of the kernel objects its containers
get (cgroups, the named netns, the nftables table) carry the node's identity, so two
data dirs on one host never share one, whatever their containers are called.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional

from ..base.errors import InvalidParameter
from ..base.files import atomic_write_json, read_json

DEFAULT_DATA_DIR = "/var/lib/ovz"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CONFIG_VERSION = 1
NODE_FILE = "node.json"
NODE_ID_RE = re.compile(r"[0-9a-f]{8}")


def validate_name(name: Any, param: str = "name") -> str:
    if not isinstance(name, (str, int)) or isinstance(name, bool) or not NAME_RE.fullmatch(str(name)):
        raise InvalidParameter(
            "%r is not a valid container name: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit" % (name,), param)
    return str(name)


def validate_data_dir(data_dir: Any) -> str:
    if not isinstance(data_dir, str) or not data_dir.startswith("/") or "\0" in data_dir:
        raise InvalidParameter("must be an absolute path, got %r" % (data_dir,), "data_dir")
    return os.path.normpath(data_dir)


LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def validate_labels(labels: Any) -> Dict[str, str]:
    """Container labels: keys like names (they become inventory group names), string values."""
    if not isinstance(labels, dict):
        raise InvalidParameter("must be a dict of strings, got %r" % (labels,), "labels")
    result = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_RE.fullmatch(key):
            raise InvalidParameter("label key %r: use 1-63 characters from A-Z a-z 0-9 _ . -, starting with a "
                                   "letter or digit" % (key,), "labels")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > 256:
            raise InvalidParameter("label %s: the value must be a string of at most 256 characters, got %r"
                                   % (key, value), "labels")
        result[key] = str(value)
    return result


class HostLayout:
    """Paths of one node's data directory; computing them touches nothing."""

    def __init__(self, data_dir: str = DEFAULT_DATA_DIR) -> None:
        self.data_dir = validate_data_dir(data_dir)

    def conf_dir(self) -> str:
        return os.path.join(self.data_dir, "conf")

    def conf(self, name: str) -> str:
        return os.path.join(self.data_dir, "conf", name + ".json")

    def private(self, name: str) -> str:
        return os.path.join(self.data_dir, "private", name)

    def root(self, name: str) -> str:
        return os.path.join(self.data_dir, "root", name)

    def dump(self, name: str) -> str:
        return os.path.join(self.data_dir, "dump", name)

    def run(self, name: str) -> str:
        return os.path.join(self.data_dir, "run", name)

    def volatile(self, name: str) -> str:
        """A small tmpfs while the container runs: what it writes onto the host (guest, console.log)."""
        return os.path.join(self.data_dir, "run", name, "volatile")

    def guest(self, name: str) -> str:
        """Bound on /run/ovz inside (boot and halt markers, user_beancounters)."""
        return os.path.join(self.volatile(name), "guest")

    def console(self, name: str) -> str:
        """The init's stdout and /dev/console (run/<name>/console.log links to it)."""
        return os.path.join(self.volatile(name), "console.log")

    def templates(self) -> str:
        return os.path.join(self.data_dir, "templates")

    def failure_log(self, name: str, action: str) -> str:
        """Where the log of a failed CRIU ``action`` for ``name`` is kept: the images it ran on
        may be a scratch copy that goes away with the failure."""
        return os.path.join(self.data_dir, "log", "%s.%s-failed.log" % (name, action))

    def names(self) -> List[str]:
        try:
            entries = os.listdir(self.conf_dir())
        except FileNotFoundError:
            return []
        return sorted(e[:-5] for e in entries if e.endswith(".json") and NAME_RE.fullmatch(e[:-5]))

    def node_file(self) -> str:
        return os.path.join(self.data_dir, NODE_FILE)

    def node_id(self, record: bool = False) -> Optional[str]:
        """This data dir's identity on its host: 8 hex digits that the names of its kernel objects carry.

        Derived from the data dir's path and inode when first needed, then recorded in ``node.json``
        (``record``: by the calls that make kernel objects, or a container): a record wins, so a data
        dir moved to another path keeps its identity, and the names its running containers were given.
        A copy (``cp -a``: another directory, while the original still sits at the recorded path with
        the same record) is a node of its own and gets its own identity. Until recorded the value is
        what would be recorded, so check mode predicts the names a real run gives. None when the data
        dir does not exist: then nothing of it has a name yet. The record goes with the last container
        (``forget_node_id``).
        """
        try:
            here = os.stat(self.data_dir)
        except FileNotFoundError:
            return None
        recorded = _read_node_file(self.node_file())
        if recorded is not None:
            if (recorded["dev"], recorded["ino"]) == (here.st_dev, here.st_ino):
                if record and recorded["path"] != self.data_dir:
                    self._write_node(recorded["id"], here)   # renamed: a later copy must find the original
                return recorded["id"]
            if not _recorded_elsewhere(recorded):
                # Moved (or restored from a backup): the same node at a new place.
                if record:
                    self._write_node(recorded["id"], here)
                return recorded["id"]
        digest = hashlib.sha256(("%s\0%d\0%d" % (self.data_dir, here.st_dev, here.st_ino)).encode()).hexdigest()
        if record:
            self._write_node(digest[:8], here)
        return digest[:8]

    def forget_node_id(self) -> None:
        try:
            os.unlink(self.node_file())
        except FileNotFoundError:
            pass

    def _write_node(self, node: str, here: os.stat_result) -> None:
        # Racing writers write the same value: it is derived, not drawn.
        atomic_write_json(self.node_file(), {"id": node, "path": self.data_dir, "dev": here.st_dev,
                                             "ino": here.st_ino}, mode=0o644)


def _read_node_file(path: str) -> Optional[Dict[str, Any]]:
    try:
        data = read_json(path)
    except (ValueError, OSError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not NODE_ID_RE.fullmatch(data["id"]) \
            or not isinstance(data.get("path"), str) or not all(isinstance(data.get(k), int) for k in ("dev", "ino")):
        return None
    return data


def _recorded_elsewhere(recorded: Dict[str, Any]) -> bool:
    """Whether the directory ``node.json`` was written for still exists at its recorded path, with the same
    identity: then the one reading this copy of the record is a copy."""
    try:
        there = os.stat(recorded["path"])
    except OSError:
        return False
    original = _read_node_file(os.path.join(recorded["path"], NODE_FILE))
    return (there.st_dev, there.st_ino) == (recorded["dev"], recorded["ino"]) and original is not None and \
        original["id"] == recorded["id"]


@dataclass
class ContainerConfig:
    """What the operator asked for; survives restarts and host reboots."""

    name: str
    layout: str = "image"
    hostname: str = ""
    init: str = "/sbin/init"
    onboot: bool = False
    bootorder: int = 0
    labels: Dict[str, str] = field(default_factory=dict)
    template: str = ""
    diskspace: List[Optional[int]] = field(default_factory=lambda: [None, None])
    diskinodes: List[Optional[int]] = field(default_factory=lambda: [None, None])
    halt_signal: str = "auto"
    stop_timeout: int = 60
    limits: Dict[str, Any] = field(default_factory=dict)
    network: Dict[str, Any] = field(default_factory=dict)
    quota: Dict[str, Any] = field(default_factory=dict)
    unprivileged: bool = False      # a user namespace with its own id block (idmap.py)
    seccomp_allow: List[str] = field(default_factory=list)   # calls the seccomp filter denies, allowed here
    version: int = CONFIG_VERSION

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ContainerConfig":
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("not a container configuration")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ConfigStore:
    def __init__(self, layout: HostLayout) -> None:
        self.layout = layout

    def exists(self, name: str) -> bool:
        return os.path.exists(self.layout.conf(name))

    def load(self, name: str) -> Optional[ContainerConfig]:
        data = read_json(self.layout.conf(name))
        if data is None:
            return None
        config = ContainerConfig.from_dict(data)
        if config.name != name:
            raise ValueError("%s holds the configuration of %r" % (self.layout.conf(name), config.name))
        return config

    def save(self, config: ContainerConfig) -> None:
        atomic_write_json(self.layout.conf(config.name), config.to_dict(), what="the configuration of %s" % config.name)

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.layout.conf(name))
        except FileNotFoundError:
            pass


class ContainerLock:
    """An exclusive ``flock`` on ``run/<name>/lock``, held by every mutating call.

    The lock file may be removed by ``destroy`` while others wait on it, so after
    taking the lock we check that the path still names the file we locked.
    """

    def __init__(self, layout: HostLayout, name: str, timeout: Optional[float] = None) -> None:
        self.path = os.path.join(layout.run(name), "lock")
        self.conf = layout.conf(name)
        self.timeout = timeout
        self.fd: Optional[int] = None
        self.made: List[str] = []   # directories this lock brought into being, deepest first

    def __enter__(self) -> "ContainerLock":
        directory = os.path.dirname(self.path)
        while not os.path.isdir(directory) and directory != os.path.dirname(directory):
            self.made.append(directory)
            directory = os.path.dirname(directory)
        while True:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            if exc[0] is not None and self.made and not os.path.exists(self.conf):
                self._remove_own_traces()
            os.close(self.fd)
            self.fd = None

    def _remove_own_traces(self) -> None:
        """A call that failed on a container that does not exist leaves no lock behind (nothing changed)."""
        try:
            if os.listdir(os.path.dirname(self.path)) != ["lock"]:
                return
            os.unlink(self.path)
            for directory in self.made:
                os.rmdir(directory)
        except OSError:
            pass


def iter_configs(layout: HostLayout) -> Iterator[ContainerConfig]:
    store = ConfigStore(layout)
    for name in layout.names():
        try:
            config = store.load(name)
        except (ValueError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno not in (errno.EACCES, errno.EISDIR):
                raise
            continue
        if config is not None:
            yield config
