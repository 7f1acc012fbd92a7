# -*- coding: utf-8 -*-
"""Migration on the multi-node harness: a container whose init starts a workload (``ckpt_workload.c``,
an echo service and a counter; or a shell counter without sockets), its status read from inside, and
the hub's view of its addresses (10.213.201.<i>, fd00:213::201:<i>)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from . import REPO
from .multinode import S50_PLAIN


WORKLOAD_SRC = os.path.join(REPO, "tests", "integration", "ckpt_workload.c")


PORT = 7000          # the workload's echo service (IPv4)


HTTP_PORT = 8080     # busybox httpd (IPv4 and IPv6)


S50_TCP = """#!/bin/sh
case "$1" in
    start) /usr/bin/ckpt_workload %d /root/status </dev/null >/dev/null 2>&1 &
           mkdir -p /root/www && echo ovz-www > /root/www/index.html && httpd -p %d -h /root/www ;;
esac
exit 0
""" % (PORT, HTTP_PORT)


@pytest.fixture(scope="session")
def workload(session_dir):
    binary = os.path.join(session_dir, "ckpt_workload")
    if not os.path.exists(binary):
        subprocess.run(["gcc", "-static", "-O2", "-o", binary, WORKLOAD_SRC], check=True)
    return binary


def addresses(index):
    return ["10.213.201.%d" % index, "fd00:213::201:%d" % index]


def make_container(node, name, template, workload_binary, ips, layout="directory", tcp=True, memfill=None,
                   unprivileged=False):
    """A container with the workload started by its init (so CRIU sees it in the init's tree);
    ``tcp``: the C workload with its echo service and httpd, else a shell counter without sockets;
    ``memfill``: (binary, MiB) also runs memfill.c, which checks a pattern in that much memory."""
    node.create_container(name, template, ips, layout=layout, start=False, unprivileged=unprivileged)
    script = S50_TCP if tcp else S50_PLAIN
    copies = [(workload_binary, "usr/bin/ckpt_workload")]
    if memfill:
        copies.append((memfill[0], "usr/bin/memfill"))
        script = script.replace("    start) ", "    start) /usr/bin/memfill %d /root/memstatus </dev/null >/dev/null 2>&1 &\n"
                                "           " % memfill[1], 1)
    code = ("import shutil, os\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "m = ContainerManager(%r, %r)\n"
            "c = m.load(%r)\n"
            "s = m.storage(c)\n"
            "s.mount()\n"
            "try:\n"
            "    os.makedirs(os.path.join(s.root, 'usr/bin'), exist_ok=True)\n"
            "    for source, dest in %r:\n"
            "        shutil.copy(source, os.path.join(s.root, dest))\n"
            "    with open(os.path.join(s.root, 'etc/init.d/S50workload'), 'w') as f:\n"
            "        f.write(%r)\n"
            "    os.chmod(os.path.join(s.root, 'etc/init.d/S50workload'), 0o755)\n"
            "    with open(os.path.join(s.root, 'root/data'), 'w') as f:\n"
            "        f.write('ovz-migration-data\\n' * 1000)\n"
            "finally:\n"
            "    s.umount()\n"
            "m.start(%r, wait_boot=True, timeout=60)\n"
            % (node.data_dir, node.cgroup_parent, name, copies, script, name))
    node.python(code)
    wait_status(node, name, above=2)


def sh(node, name, script):
    code = ("import sys\n"
            "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
            "r = ContainerManager(%r, %r).exec(%r, ['/bin/sh', '-c', %r], timeout=30)\n"
            "sys.stdout.write(r.stdout.decode())\n" % (node.data_dir, node.cgroup_parent, name, script))
    return node.python(code).stdout


def status_of(node, name):
    line = sh(node, name, "cat /root/status 2>/dev/null")
    return dict(pair.split("=", 1) for pair in line.split() if "=" in pair)


def wait_status(node, name, timeout=20, above=0):
    """The workload's status once its counter is above ``above``."""
    deadline = time.monotonic() + timeout
    while True:
        status = status_of(node, name)
        if int(status.get("counter", 0)) > above:
            return status
        assert time.monotonic() < deadline, "the workload in %s did not start" % name
        time.sleep(0.2)


def echo(sock, token):
    sock.sendall(token.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        assert chunk, "connection closed"
        data += chunk
    return data.decode().strip()


def ping_all(harness, ips):
    for ip in ips:
        assert harness.hub.run(["busybox", "ping", "-c1", "-W2", ip], check=False).returncode == 0, ip
