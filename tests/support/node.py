# -*- coding: utf-8 -*-
"""A test node and what tests do with it: commands inside a container, module runs, waiting.

A ``Node`` is a data dir and a cgroup parent of its own on this kernel (``new_node`` makes one and
removes everything it holds afterwards; the ``node`` fixture of ``tests/conftest.py`` is one per test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from . import COLLECTIONS_ROOT, REPO

from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager
from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.rootfs import find_lxcfs


def hang_limit(seconds: float):
    """A test's own limit on a command it waits for: ``seconds``, or none at all when the run lifts
    pytest's per-test limit (``OVZ_TEST_TIMEOUT=0``, as under TCG emulation)."""
    return None if os.environ.get("OVZ_TEST_TIMEOUT") == "0" else seconds


@contextlib.contextmanager
def running_lxcfs(data_dir: str, before_stop=None):
    """A node's own LXCFS at ``<data_dir>/lxcfs`` (so no other container on this host sees it).

    ``before_stop`` runs first on the way out: the node's containers go before their LXCFS."""
    binary = shutil.which("lxcfs")
    if binary is None:
        pytest.skip("lxcfs is not installed (Debian package lxcfs)")
    mount = os.path.join(data_dir, "lxcfs")
    os.makedirs(mount, exist_ok=True)
    proc = subprocess.Popen([binary, "-f", "-p", os.path.join(data_dir, "ovz-lxcfs.pid"), mount],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while find_lxcfs(data_dir) != mount:
            assert proc.poll() is None and time.monotonic() < deadline, "lxcfs did not come up"
            time.sleep(0.05)
        yield mount
    finally:
        if before_stop is not None:
            before_stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if find_lxcfs(data_dir) == mount:
            subprocess.run(["umount", "-l", mount], check=False)


def debian_template_path() -> str:
    """OVZ_DEBIAN_TEMPLATE, or scripts/build-debian-template's build (cached by content: a hit is instant)."""
    path = os.environ.get("OVZ_DEBIAN_TEMPLATE")
    if not path or not os.path.exists(path):
        out = subprocess.run([os.path.join(REPO, "scripts", "build-debian-template")], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout
        path = out.strip().splitlines()[-1]
    return path


class Node:
    """One test node: its own data_dir and cgroup parent on this kernel."""

    def __init__(self, base: str, tag: str) -> None:
        self.data_dir = os.path.join(base, "data")
        self.cgroup_parent = "ovz-t%s" % tag
        self.manager = ContainerManager(self.data_dir, self.cgroup_parent)
        self._names = 0
        self.tag = tag

    def name(self) -> str:
        self._names += 1
        return "ovz%s%d" % (self.tag, self._names)

    def cleanup(self) -> None:
        for name in self.manager.layout.names():
            try:
                self.manager.destroy(name)
            except Exception as exc:  # noqa: BLE001 - clean as much as possible
                print("cleanup of %s failed: %s" % (name, exc), file=sys.stderr)
        # The node's cgroup parent, in every hierarchy (the engine leaves parents alone).
        backend = self.manager.backend
        for path in backend.resolve_parent(self.cgroup_parent).items():
            directory = os.path.join(backend.mountpoint(path[0]), path[1].lstrip("/"))
            if os.path.isdir(directory):
                try:
                    os.rmdir(directory)
                except OSError as exc:
                    print("cgroup %s not removed: %s" % (directory, exc), file=sys.stderr)


@contextlib.contextmanager
def new_node(session_dir: str):
    """A Node with a fresh tag under session_dir, removed with everything it holds afterwards."""
    tag = uuid.uuid4().hex[:6]
    base = os.path.join(session_dir, "node-" + tag)
    os.makedirs(base)
    result = Node(base, tag)
    try:
        yield result
    finally:
        result.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def sh(manager: ContainerManager, name: str, script: str, check: bool = True):
    result = manager.exec(name, ["/bin/sh", "-c", script], timeout=60)
    if check and result.rc != 0:
        raise AssertionError("inside %s: %r exited %d: %s %s"
                             % (name, script, result.rc, result.stdout.decode(), result.stderr.decode()))
    return result


def sh_without_session(manager: ContainerManager, name: str, script: str, stdout=subprocess.DEVNULL) -> None:
    """Run ``script`` by /bin/sh inside, entered from the host as exec enters but *without* a session of its
    own (as exec itself never does), and with ``stdout`` of the caller's: what a careless host tool would
    leave inside (a job whose session leader is the host's, a host file held open)."""
    from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import PAYLOAD
    runtime = manager.runtime(name)
    cgroups = manager.cgroups_for(runtime)
    code = ("import os, sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.process import enter_container, "
            "fork_in_cgroup, join_cgroups\n"
            "if fork_in_cgroup(%r) == 0:\n"
            "    join_cgroups(%r)\n"
            "    enter_container(%d)\n"
            "    if os.fork() == 0:\n"
            "        os.execv('/bin/sh', ['sh', '-c', %r])\n"
            "    os.wait()\n"
            "    os._exit(0)\n"
            "os.wait()\n"
            % (COLLECTIONS_ROOT, cgroups.exec_cgroup2(PAYLOAD), cgroups.payload_procs(PAYLOAD), runtime.init_pid, script))
    subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL,
                   check=True, timeout=60)


def wait_for(predicate, what: str, timeout: float = 20.0):
    """Poll ``predicate`` until it gives something true, and return that; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


MODULES_DIR = os.path.join(REPO, "plugins", "modules")


def run_module(module: str, args: dict, check: bool = False, diff: bool = False) -> dict:
    """Run a module file as Ansible would run it on the target, and return its JSON result."""
    payload = dict(args)
    payload["_ansible_check_mode"] = check
    payload["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ovz-args-", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_file = handle.name
    try:
        env = dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)
        proc = subprocess.run([sys.executable, os.path.join(MODULES_DIR, module + ".py"), args_file],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                              timeout=300, check=False)
    finally:
        os.unlink(args_file)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc %d): %s %s"
                             % (module, proc.returncode, proc.stdout, proc.stderr)) from None
    return result
