# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Run engine calls on another host over SSH, with nothing installed there but Python 3.

A migration's target may have no copy of this collection (Ansible hosts only
ever receive AnsiballZ payloads). So the source ships the engine itself: the
``module_utils`` package with its sub-packages (``_engine/base``, ``kernel``, ...),
read from wherever this process imported it (a checkout, an installed collection
or an AnsiballZ zip), is packed into a zip
in memory and written to the stdin of ``ssh target python3 -I -c BOOTSTRAP`` (isolated:
the login directory and the environment of the remote shell add nothing to ``sys.path``).
The bootstrap reads it into a ``memfd`` (an anonymous file: nothing is ever
written to the target's disks, nothing is left when the process ends, even
after ``kill -9``), imports the engine from ``/proc/self/fd/N`` and serves
requests: one JSON line in, one JSON line out, over the same connection, so
the zip is sent and the interpreter started once per migration.

Only the calls a module registers in its ``REMOTE_CALLS`` table can be made
(no ``getattr`` dispatch). The server's standard output is kept for the
protocol; anything else (child processes, stray prints) goes to stderr.

When the connection drops before the client said goodbye (the source was
killed), the server calls the module's ``REMOTE_ABANDONED`` hook with the
session's state, so the target undoes what an unfinished migration left.

The first ssh connection is a ControlMaster: ``rsync`` and other transfers to
the same target reuse it (``Target.ssh_command()``), with no new handshakes.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Optional

from ..base.errors import InvalidParameter, OvzError
from ..node.config import DEFAULT_DATA_DIR, validate_data_dir

# ansible_collections.ovz.containers.plugins.module_utils: the package the zip holds, sub-packages and all.
PACKAGE = __name__.rsplit(".", 3)[0]
# The modules whose REMOTE_CALLS a session may use, by the name a session gives, and where each lives.
MODULES = {"migration": "_engine.ops.migration_target"}
HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+|[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252}))$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTROL_SOCKET = "cm"                          # the ssh master's socket in a session's control directory
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"

# Runs on the target as ``python3 -I -c``: read the zip (length line, bytes), import, serve.
BOOTSTRAP = r"""
import os, sys
inp = sys.stdin.buffer
size = int(inp.readline())
data = b""
while len(data) < size:
    chunk = inp.read(size - len(data))
    if not chunk:
        sys.exit(3)
    data += chunk
try:
    fd = os.memfd_create("ovz-engine", 0)
    path = "/proc/self/fd/%d" % fd
except (AttributeError, OSError):
    import tempfile
    fd, path = tempfile.mkstemp(prefix="ovz-engine-", suffix=".zip")
    os.unlink(path)
    path = "/proc/self/fd/%d" % fd
view = memoryview(data)
while view:
    view = view[os.write(fd, view):]
sys.path.insert(0, path)
import importlib
sys.exit(importlib.import_module(REMOTE).serve(inp, MODULE))
"""


@dataclass
class Target:
    """Where a container goes: an SSH destination and that host's engine settings."""

    host: str
    user: str = "root"
    port: int = 22
    identity_file: Optional[str] = None
    known_hosts: Optional[str] = None
    ssh_options: List[str] = field(default_factory=list)
    data_dir: str = DEFAULT_DATA_DIR
    cgroup_parent: str = "auto"
    python: str = "python3"
    connect_timeout: int = 10

    @classmethod
    def from_param(cls, value: Any, **overrides: Any) -> "Target":
        """A target from ``[user@]host[:port]`` or a dict of the fields; validated, naming ``target``."""
        if isinstance(value, Target):
            data = dict(value.__dict__)
        elif isinstance(value, dict):
            data = dict(value)
        elif isinstance(value, str) and value:
            data = {}
            text = value
            if "@" in text:
                data["user"], text = text.split("@", 1)
            if text.startswith("["):
                host, _sep, rest = text[1:].partition("]")
                data["host"] = host
                if rest.startswith(":"):
                    data["port"] = rest[1:]
            elif text.count(":") == 1:
                data["host"], data["port"] = text.split(":")
            else:
                data["host"] = text
        else:
            raise InvalidParameter("must be [user@]host[:port] or a dict, got %r" % (value,), "target")
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)  # pylint: disable=no-member
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParameter("unknown target settings: %s" % ", ".join(unknown), "target")
        target = cls(**data)
        target.validate()
        return target

    def validate(self) -> None:
        if not isinstance(self.host, str) or not HOST_RE.match(self.host) or self.host.startswith("-"):
            raise InvalidParameter("%r is not a host name or address" % (self.host,), "target")
        if not isinstance(self.user, str) or not USER_RE.match(self.user):
            raise InvalidParameter("%r is not a user name" % (self.user,), "target")
        try:
            self.port = int(self.port)
        except (TypeError, ValueError):
            raise InvalidParameter("port %r is not a number" % (self.port,), "target") from None
        if not 0 < self.port < 65536:
            raise InvalidParameter("port %d is out of range" % self.port, "target")
        for path, param in ((self.identity_file, "ssh_key"), (self.known_hosts, "known_hosts")):
            if path is not None and (not isinstance(path, str) or not path.startswith("/")):
                raise InvalidParameter("must be an absolute path, got %r" % (path,), param)
        if not isinstance(self.ssh_options, list) or not all(isinstance(o, str) for o in self.ssh_options):
            raise InvalidParameter("must be a list of ssh -o options", "ssh_options")
        validate_data_dir(self.data_dir)
        if not isinstance(self.python, str) or not self.python or any(c in self.python for c in " \t\n;&|`$"):
            raise InvalidParameter("%r is not an interpreter path" % (self.python,), "target_python")

    @property
    def destination(self) -> str:
        return "%s@%s" % (self.user, self.host)

    def ssh_argv(self, control_path: Optional[str] = None, master: bool = False) -> List[str]:
        # ssh keeps the first value it is given for an option: BatchMode (never a prompt) comes before the
        # operator's ssh_options, and those before the defaults below, so that they can change them.
        argv = ["ssh", "-o", "BatchMode=yes"]
        for option in self.ssh_options:
            argv += ["-o", option]
        argv += ["-o", "ConnectTimeout=%d" % self.connect_timeout,
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6", "-o", "LogLevel=ERROR",
                 # Bulk copies: AES-GCM (AES-NI) first, no compression (images and pages hardly compress).
                 "-o", "Ciphers=" + CIPHERS, "-o", "Compression=no",
                 "-p", str(self.port)]
        if self.identity_file:
            argv += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "StrictHostKeyChecking=yes"]
        if control_path:
            argv += ["-o", "ControlPath=" + control_path, "-o", "ControlMaster=" + ("yes" if master else "no")]
        return argv

    def ssh_command(self, control_path: Optional[str] = None) -> str:
        """The ssh command line for ``rsync -e``."""
        return " ".join(shlex.quote(a) for a in self.ssh_argv(control_path))

    def remote_path(self, path: str) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s@%s:%s" % (self.user, host, path)


class RemoteError(OvzError):
    """A call on the target failed; ``kind`` is the exception class name there."""

    def __init__(self, message: str, param: Optional[str] = None, kind: str = "OvzError", detail: str = "") -> None:
        super().__init__(message, param)
        self.kind = kind
        self.detail = detail


class Unreachable(OvzError):
    """The target could not be reached or its engine could not be started."""


# ---------------------------------------------------------------------------------------
# the client side
# ---------------------------------------------------------------------------------------

# What the target needs besides the calls' own module, below PACKAGE (some are imported lazily there:
# devices_bpf by cgroups only on cgroup v2, so a source that has not loaded it must still send it).
ENGINE_MODULES = ("_engine.ops.remote", "_engine.container.manager", "_engine.ops.checkpoint", "_engine.kernel.criu",
                  "_engine.resources.network", "_engine.node.config", "_engine.base.errors", "_engine.base.faults",
                  "_engine.kernel.devices_bpf")


def engine_sources(module: str) -> Dict[str, bytes]:
    """Source of every engine module this process has loaded, after loading what the target needs.

    Read through each module's loader, so it works wherever the engine was imported
    from: a checkout, an installed collection, or an AnsiballZ zip (which holds only the
    module_utils a module imports; everything the target runs is imported by then).
    """
    for name in (MODULES[module],) + ENGINE_MODULES:
        try:
            importlib.import_module(PACKAGE + "." + name)
        except ImportError:
            continue  # a partial install: the target reports what is missing
    sources = {}
    for name, loaded in list(sys.modules.items()):
        if not name.startswith(PACKAGE + ".") or loaded is None:
            continue
        loader = getattr(loaded, "__loader__", None)
        path = getattr(loaded, "__file__", None)
        if loader is None or not path or not hasattr(loader, "get_data"):
            continue
        relative = name[len(PACKAGE) + 1:].replace(".", "/")
        # A package is its __init__.py (empty here, but it must exist for the import system).
        filename = relative + "/__init__.py" if os.path.basename(path) == "__init__.py" else relative + ".py"
        sources[filename] = loader.get_data(path)
    return sources


def engine_zip(module: str = "migration") -> bytes:
    """The engine package as a zip for the target's ``sys.path``."""
    buffer = io.BytesIO()
    parts = PACKAGE.split(".")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for depth in range(1, len(parts) + 1):
            archive.writestr("/".join(parts[:depth]) + "/__init__.py", "")
        base = "/".join(parts)
        sources = engine_sources(module)
        # Every sub-package gets its __init__.py, whether or not this process loaded it from a file.
        for filename in list(sources):
            package = os.path.dirname(filename)
            while package:
                sources.setdefault(package + "/__init__.py", b"")
                package = os.path.dirname(package)
        for filename, source in sorted(sources.items()):
            archive.writestr(base + "/" + filename, source)
    return buffer.getvalue()


class RemoteSession:
    """One ssh connection running the engine on the target; ``call`` sends requests over it."""

    def __init__(self, target: Target, module: str = "migration", timeout: float = 60.0) -> None:
        if module not in MODULES:
            raise InvalidParameter("no remote calls in module %r" % module, "module")
        self.target = target
        self.module = module
        self.timeout = timeout
        self.proc: Optional[subprocess.Popen] = None
        self.control_dir: Optional[str] = None
        self.hello: Dict[str, Any] = {}
        self._buffer = b""

    @property
    def control_path(self) -> Optional[str]:
        return os.path.join(self.control_dir, CONTROL_SOCKET) if self.control_dir else None

    def open(self) -> Dict[str, Any]:
        self.control_dir = tempfile.mkdtemp(prefix="ovz-ssh-")
        bootstrap = BOOTSTRAP.replace("MODULE", repr(self.module)).replace("REMOTE", repr(__name__))
        command = "PATH=%s:$PATH exec %s -I -c %s" % (SBIN_PATH, shlex.quote(self.target.python), shlex.quote(bootstrap))
        argv = self.target.ssh_argv(self.control_path, master=True) + [self.target.destination, command]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                         stderr=subprocess.PIPE, start_new_session=True)
            payload = engine_zip(self.module)
            if self.proc.stdin is None:
                raise RuntimeError("ssh was started without a pipe for its input")
            self.proc.stdin.write(b"%d\n" % len(payload) + payload)
            self.proc.stdin.flush()
            self.hello = self._read(self.target.connect_timeout + self.timeout)
        except (OSError, OvzError) as exc:
            detail = self._stderr()
            self.close()
            raise Unreachable("cannot run the engine on %s over ssh: %s%s"
                              % (self.target.destination, exc, ("; " + detail) if detail else ""), "target") from None
        return self.hello

    def forward_to_here(self, local_port: int) -> int:
        """Let the target reach ``127.0.0.1:local_port`` of this host through the session's ssh master
        (``ssh -O forward -R``); the port on the target's loopback that leads here."""
        if self.control_path is None:
            raise Unreachable("no session with %s" % self.target.destination, "target")
        argv = self.target.ssh_argv(self.control_path) + ["-O", "forward", "-R", "127.0.0.1:0:127.0.0.1:%d" % local_port,
                                                          self.target.destination]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=self.target.connect_timeout + 20, check=False)
        port = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode != 0 or not port.isdigit():
            raise OvzError("ssh could not forward a port from %s to this host: %s"
                           % (self.target.destination, (proc.stderr or proc.stdout).strip()[-500:]), "target")
        return int(port)

    def _stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        return self.proc.stderr.read().decode(errors="replace").strip()[-2000:]

    def _read(self, timeout: float) -> Dict[str, Any]:
        if self.proc is None or self.proc.stdout is None:
            raise RuntimeError("no session output to read")
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OvzError("no answer from %s within %.0f s" % (self.target.destination, timeout), "target")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    said = self._stderr()
                    raise OvzError("the connection to %s closed (ssh exit %s)%s"
                                   % (self.target.destination, self.proc.returncode, ": " + said if said else ""),
                                   "target")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def call(self, function: str, /, timeout: Optional[float] = None, **args: Any) -> Any:
        """Run ``REMOTE_CALLS[function](**args)`` on the target; its JSON result, or its error raised here."""
        if self.proc is None or self.proc.poll() is not None:
            raise Unreachable("no session with %s" % self.target.destination, "target")
        if self.proc.stdin is None:
            raise RuntimeError("ssh was started without a pipe for its input")
        try:
            self.proc.stdin.write(json.dumps({"call": function, "args": args}).encode() + b"\n")
            self.proc.stdin.flush()
            answer = self._read(timeout if timeout is not None else self.timeout)
        except (OSError, ValueError) as exc:
            raise Unreachable("the session with %s broke during %s: %s %s"
                              % (self.target.destination, function, exc, self._stderr()), "target") from None
        if answer.get("ok"):
            return answer.get("result")
        raise RemoteError("on %s: %s" % (self.target.host, answer.get("error")), answer.get("param"),
                          answer.get("kind", "OvzError"), answer.get("traceback", ""))

    def close(self, goodbye: bool = True) -> None:
        """End the session; with ``goodbye`` the target runs no abandon hook."""
        if self.proc is not None:
            try:
                if goodbye and self.proc.poll() is None and self.proc.stdin is not None:
                    self.proc.stdin.write(b'{"call": "__bye__"}\n')
                    self.proc.stdin.flush()
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None
        if self.control_dir:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            self.control_dir = None

    @staticmethod
    def end_transfers(control_dir: str) -> List[int]:
        """SIGKILL the transfers (rsync and its ssh) that still go through the ssh master of a session
        whose process died; the PIDs ended. They would otherwise write on the target after the target
        undid the migration. The master itself and the call it carries (a restore the target finishes
        and reports to whoever converges) are left alone."""
        from ..kernel.process import end_processes
        marker = ("ControlPath=" + os.path.join(control_dir, CONTROL_SOCKET)).encode()

        def uses_it(pid: int) -> bool:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                cmdline = handle.read()
            return marker in cmdline and b"ControlMaster=yes" not in cmdline

        return end_processes(uses_it)

    def __enter__(self) -> "RemoteSession":
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# the server side (runs on the target)
# ---------------------------------------------------------------------------------------

def _answer(out: IO[bytes], data: Dict[str, Any]) -> None:
    out.write(json.dumps(data, default=str).encode() + b"\n")
    out.flush()


def serve(inp: IO[bytes], module: str) -> int:
    """Answer requests from ``inp`` until the client says goodbye or goes away."""
    # The protocol owns the real stdout; fd 1 now points to stderr for everyone else.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ["PATH"] = SBIN_PATH + ":" + os.environ.get("PATH", "")
    try:
        if module not in MODULES:
            _answer(out, {"ok": False, "error": "no remote calls in module %r" % module})
            return 2
        handlers = importlib.import_module(PACKAGE + "." + MODULES[module])
        calls = handlers.REMOTE_CALLS
        abandoned = getattr(handlers, "REMOTE_ABANDONED", None)
    except Exception as exc:  # noqa: BLE001 - reported to the client
        _answer(out, {"ok": False, "error": "cannot load the engine: %s" % exc, "traceback": traceback.format_exc()})
        return 2
    session: Dict[str, Any] = {}
    _answer(out, {"ok": True, "python": sys.version.split()[0], "pid": os.getpid(), "uname": list(os.uname())})
    goodbye = False
    try:
        for line in inp:
            request = json.loads(line)
            name = request.get("call")
            if name == "__bye__":
                goodbye = True
                break
            handler = calls.get(name)
            if handler is None:
                _answer(out, {"ok": False, "error": "unknown remote call %r" % name, "kind": "InvalidParameter"})
                continue
            try:
                result = handler(session, **request.get("args", {}))
                _answer(out, {"ok": True, "result": result})
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the client
                _answer(out, {"ok": False, "error": str(exc), "param": getattr(exc, "param", None),
                              "kind": type(exc).__name__, "traceback": traceback.format_exc()})
    except (OSError, ValueError):
        pass
    finally:
        if not goodbye and abandoned is not None:
            abandoned(session)
    return 0
