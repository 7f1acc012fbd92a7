# -*- coding: utf-8 -*-
"""A multi-node harness on one kernel: nodes joined by a test bridge, each with its own sshd.

Usable from pytest (the fixture ``harness``, imported into a test module), from
benchmarks (``from support.multinode import Harness``) and by hand
(``python tests/multinode.py up|down DIR``, the command line of this module) for
Molecule or playbooks, which get an Ansible inventory (``inventory.ini``).

Layout (``tag`` = 6 hex digits, every object named with the ``ovz`` prefix)::

    netns ovz-m<tag>h    the hub: bridge ovzbr0, 10.213.200.1/16, fd00:213::200:1/64;
                         the controller and "third party" (ssh, ansible, TCP clients run here)
    netns ovz-m<tag>n<i> node i: link ovz0 (10.213.200.<10+i>/16, fd00:213::200:<10+i>/64),
                         forwarding and proxy_ndp on, its own sshd on port 22
    veth  ovzn<i> (hub, on the bridge) <-> ovz0 (node)

Each node also has its own ``data_dir`` and ``cgroup_parent`` (``ovz-t<6 hex>``,
nested under the caller's own cgroups, as ``tests/conftest.py`` nodes are).
sshd is started through ``nsenter --net`` only (same mount namespace as the
caller, so a node's mounts are visible to the tests) and ended by its recorded
PID (and start time). Keys (one host key, one client key) and the known_hosts
file live in the harness directory. Everything the harness made is recorded
in ``harness.json`` as it is made, so ``close()``, and ``scripts/sweep.py``
after a crash, remove exactly that.

Container addresses for tests: 10.213.201.0/24 and fd00:213::201:0/112 are on
the nodes' prefix, so the hub reaches them through the proxy ARP/NDP of
whichever node runs the container.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from . import COLLECTIONS_ROOT

HARNESS_FILE = "harness.json"

# Without sockets: a shell whose counter lives only in its memory. It never forks (builtins only:
# it sleeps in ``read -t`` on a FIFO), because the checkpoint's check that every process descends
# from the init races with forks.
S50_PLAIN = """#!/bin/sh
case "$1" in
    start) mkfifo /root/tick 2>/dev/null
           sh -c 'i=0; while :; do i=$((i+1)); echo "counter=$i pid=$$" > /root/status;
                  read -t 0.2 x <> /root/tick; done' </dev/null >/dev/null 2>&1 & ;;
esac
exit 0
"""
NETNS_PREFIX = "ovz-m"
BRIDGE = "ovzbr0"
NODE_LINK = "ovz0"
HUB4, HUB6 = "10.213.200.1", "fd00:213::200:1"
PREFIX4, PREFIX6 = 16, 64
SSHD = "/usr/sbin/sshd"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def node_ip4(index: int) -> str:
    return "10.213.200.%d" % (10 + index)


def node_ip6(index: int) -> str:
    return "fd00:213::200:%d" % (10 + index)


def run(argv: Sequence[str], check: bool = True, timeout: float = 120, input: Optional[str] = None,
        env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, check=False, input=input, env=env)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d: %s %s" % (list(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc


def process_starttime(pid: int) -> Optional[int]:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def kill_recorded(pid: int, starttime: Optional[int], timeout: float = 5.0) -> bool:
    """SIGTERM then SIGKILL the process ``pid`` if it is still the one recorded; True if one was ended."""
    if not pid or process_starttime(pid) is None or process_starttime(pid) != starttime:
        return False
    for signum in (15, 9):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if process_starttime(pid) != starttime:
                return True
            time.sleep(0.02)
    return True


class Netns:
    """A named network namespace (``ip netns``); commands enter it with ``nsenter --net`` only."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = "/run/netns/" + name

    def create(self) -> None:
        run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")
        for key, value in (("net.ipv6.conf.all.accept_dad", 0), ("net.ipv6.conf.default.accept_dad", 0)):
            self.sysctl(key, value)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def ip(self, *args: str, check: bool = True) -> str:
        return run(["ip", "-n", self.name] + list(args), check=check).stdout

    def argv(self, argv: Sequence[str]) -> List[str]:
        return ["nsenter", "--net=" + self.path] + list(argv)

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 120, input: Optional[str] = None,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return run(self.argv(argv), check=check, timeout=timeout, input=input, env=env)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(self.argv(argv), **kwargs)  # pylint: disable=consider-using-with

    def sysctl(self, key: str, value: Any) -> None:
        self.run(["sysctl", "-qw", "%s=%s" % (key, value)])

    def links(self) -> List[str]:
        return sorted(link["ifname"] for link in json.loads(self.ip("-j", "link", "show")))

    def ping(self, address: str, wait: int = 2) -> bool:
        return self.run(["busybox", "ping", "-c1", "-W%d" % wait, address], check=False).returncode == 0

    def end_processes(self) -> List[int]:
        """SIGKILL every process still in this netns: what its sshd started (sessions and their
        commands) outlives the daemon when the client side vanished with its own netns."""
        if not self.exists():
            return []
        inode = os.stat(self.path).st_ino
        ended = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat("/proc/%s/ns/net" % entry).st_ino != inode:
                    continue
                os.kill(int(entry), 9)
                ended.append(int(entry))
            except OSError:
                continue
        return ended

    def delete(self) -> None:
        if self.exists():
            self.end_processes()
            run(["ip", "netns", "del", self.name], check=False)


class HarnessNode:
    """One node: a netns with its own sshd, ``data_dir`` and ``cgroup_parent``."""

    def __init__(self, harness: "Harness", index: int, cgroup_parent: str) -> None:
        self.harness = harness
        self.index = index
        self.name = "node%d" % index
        self.netns = Netns("%s%sn%d" % (NETNS_PREFIX, harness.tag, index))
        self.ip4 = node_ip4(index)
        self.ip6 = node_ip6(index)
        self.base = os.path.join(harness.base, self.name)
        self.data_dir = os.path.join(self.base, "data")
        self.cgroup_parent = cgroup_parent
        self.sshd_pid: Optional[int] = None
        self.sshd_starttime: Optional[int] = None

    # -- access -----------------------------------------------------------------------
    def target(self, **extra: Any) -> Dict[str, Any]:
        """This node as a migration target (``migration.Target`` fields)."""
        result = {"host": self.ip4, "user": "root", "port": 22, "identity_file": self.harness.client_key,
                  "known_hosts": self.harness.known_hosts, "data_dir": self.data_dir,
                  "cgroup_parent": self.cgroup_parent, "python": sys.executable}
        result.update(extra)
        return result

    def ssh_argv(self, command: str, via: Optional[Netns] = None) -> List[str]:
        """ssh to this node from ``via`` (default: the hub)."""
        return (via or self.harness.hub).argv(self.harness.ssh_base() + ["root@" + self.ip4, command])

    def ssh(self, command: str, check: bool = True, timeout: float = 120, input: Optional[str] = None,
            via: Optional[Netns] = None) -> subprocess.CompletedProcess:
        return run(self.ssh_argv(command, via), check=check, timeout=timeout, input=input)

    def env(self) -> Dict[str, str]:
        return dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT, PATH=SBIN_PATH)

    def python(self, code: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run Python ``code`` in this node's netns (directly, not over ssh), with the collection importable."""
        return self.netns.run([sys.executable, "-c", code], check=check, timeout=timeout, env=self.env())

    def engine(self, expression: str, timeout: float = 300) -> Any:
        """Evaluate ``expression`` with ``manager`` (this node's ContainerManager) in the node's netns; JSON result."""
        code = ("import json\n"
                "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
                "manager = ContainerManager(%r, %r)\n"
                "print('\\n' + json.dumps(%s))\n" % (self.data_dir, self.cgroup_parent, expression))
        out = self.python(code, timeout=timeout).stdout
        return json.loads(out.strip().splitlines()[-1])

    def create_container(self, name: str, template: str, ip_address: Sequence[str] = (), layout: str = "directory",
                         start: bool = True, boot_timeout: float = 180, **options: Any) -> Dict[str, Any]:
        """Create (and start, booted) a container on this node, with routed addresses; returns its facts."""
        code = ("import json\n"
                "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
                "from ansible_collections.ovz.containers.plugins.module_utils._engine.resources import network\n"
                "m = ContainerManager(%r, %r)\n"
                "config = m.create(%r, %r, layout=%r, **%r)\n"
                "if %r:\n"
                "    config.network = network.normalize_network(config.name, m.layout.data_dir, "
                "{'ip_address': %r}, None)\n"
                "    m.store.save(config)\n"
                "if %r:\n"
                "    m.start(%r, wait_boot=True, timeout=%r)\n"
                "print('\\n' + json.dumps(m.facts(%r)))\n"
                % (self.data_dir, self.cgroup_parent, name, template, layout, options, list(ip_address),
                   list(ip_address), start, name, boot_timeout, name))
        return json.loads(self.python(code).stdout.strip().splitlines()[-1])

    # -- sshd -----------------------------------------------------------------------------
    def sshd_config(self) -> str:
        return os.path.join(self.base, "sshd_config")

    def start_sshd(self) -> None:
        os.makedirs(self.base, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        with open(self.sshd_config(), "w") as handle:
            handle.write("\n".join([
                "ListenAddress %s" % self.ip4,
                "ListenAddress %s" % self.ip6,
                "Port 22",
                "HostKey %s" % self.harness.host_key,
                # The harness's client key, and the node's own file (where the ovz_host role's SSH trust
                # puts its peers' migration keys; the nodes share one filesystem).
                "AuthorizedKeysFile %s.pub %s" % (self.harness.client_key, os.path.join(self.base, "authorized_keys")),
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "PidFile none",
                # A session whose client vanished (its netns deleted with it) ends within 15 s.
                "ClientAliveInterval 5",
                "ClientAliveCountMax 3",
                "MaxStartups 64",
                "MaxSessions 64",
                "SetEnv PATH=%s" % SBIN_PATH,
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]))
        log = open(os.path.join(self.base, "sshd.log"), "ab")  # pylint: disable=consider-using-with
        try:
            proc = self.netns.popen([SSHD, "-D", "-e", "-f", self.sshd_config()], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        self.sshd_pid = proc.pid
        time.sleep(0.01)
        self.sshd_starttime = process_starttime(proc.pid)
        self.harness.save()

    def wait_ssh(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.ssh("true", check=False, timeout=timeout)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                with open(os.path.join(self.base, "sshd.log"), errors="replace") as handle:
                    log = handle.read()
                raise AssertionError("sshd of %s not reachable: %s; sshd log: %s" % (self.name, proc.stderr, log))
            time.sleep(0.1)

    def stop_sshd(self) -> None:
        if self.sshd_pid:
            kill_recorded(self.sshd_pid, self.sshd_starttime)

    # -- cleanup ----------------------------------------------------------------------------
    def destroy_containers(self) -> None:
        """Destroy every container of this node, in the node's netns (where their host ends live)."""
        if not os.path.isdir(self.data_dir) or not self.netns.exists():
            return
        code = ("import sys\n"
                "from ansible_collections.ovz.containers.plugins.module_utils._engine.container.manager import ContainerManager\n"
                "m = ContainerManager(%r, %r)\n"
                "for n in m.layout.names():\n"
                "    try:\n"
                "        m.destroy(n)\n"
                "    except Exception as exc:\n"
                "        print('cleanup of %%s failed: %%s' %% (n, exc), file=sys.stderr)\n"
                % (self.data_dir, self.cgroup_parent))
        proc = self.python(code, check=False)
        if proc.returncode != 0 or proc.stderr.strip():
            print("harness: %s cleanup: %s" % (self.name, proc.stderr), file=sys.stderr)

    def remove_cgroup_parent(self) -> None:
        from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel.cgroups import select_backend
        backend = select_backend()
        for hierarchy, path in backend.resolve_parent(self.cgroup_parent).items():
            directory = os.path.join(backend.mountpoint(hierarchy), path.lstrip("/"))
            if os.path.isdir(directory):
                try:
                    os.rmdir(directory)
                except OSError as exc:
                    print("harness: cgroup %s not removed: %s" % (directory, exc), file=sys.stderr)


class Harness:
    """``count`` nodes and a hub under ``base`` (a directory the harness owns and removes)."""

    def __init__(self, base: str, count: int = 2, tag: Optional[str] = None) -> None:
        if not 1 <= count <= 9:
            raise ValueError("1 to 9 nodes")
        self.tag = tag or uuid.uuid4().hex[:6]
        self.base = base
        self.hub = Netns("%s%sh" % (NETNS_PREFIX, self.tag))
        self.nodes = [HarnessNode(self, i, "ovz-t%s" % uuid.uuid4().hex[:6]) for i in range(1, count + 1)]
        self.host_key = os.path.join(base, "host_key")
        self.client_key = os.path.join(base, "client_key")
        self.known_hosts = os.path.join(base, "known_hosts")
        self.inventory = os.path.join(base, "inventory.ini")

    # -- records ----------------------------------------------------------------------------
    def record(self) -> Dict[str, Any]:
        return {"tag": self.tag, "base": self.base, "hub": self.hub.name,
                "nodes": [{"name": n.name, "netns": n.netns.name, "data_dir": n.data_dir,
                           "cgroup_parent": n.cgroup_parent, "ip4": n.ip4, "ip6": n.ip6,
                           "sshd_pid": n.sshd_pid, "sshd_starttime": n.sshd_starttime} for n in self.nodes]}

    def save(self) -> None:
        path = os.path.join(self.base, HARNESS_FILE)
        with open(path + ".tmp", "w") as handle:
            json.dump(self.record(), handle, indent=2)
        os.rename(path + ".tmp", path)

    def ssh_base(self) -> List[str]:
        return ["ssh", "-F", "/dev/null", "-i", self.client_key, "-o", "IdentitiesOnly=yes",
                "-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"]

    # -- bring up / down -------------------------------------------------------------------------
    def up(self) -> "Harness":
        os.makedirs(self.base, exist_ok=True)
        self.save()
        try:
            self._keys()
            self._network()
            for node in self.nodes:
                os.makedirs(node.data_dir, exist_ok=True)
                node.start_sshd()
            for node in self.nodes:
                node.wait_ssh()
            self._inventory()
        except BaseException:
            self.close()
            raise
        return self

    def _keys(self) -> None:
        for path in (self.host_key, self.client_key):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ovz-harness-" + self.tag, "-f", path])
        with open(self.host_key + ".pub") as handle:
            host_pub = " ".join(handle.read().split()[:2])
        with open(self.known_hosts, "w") as handle:
            for node in self.nodes:
                handle.write("%s,%s %s\n" % (node.ip4, node.ip6, host_pub))

    def _network(self) -> None:
        self.hub.create()
        self.save()
        self.hub.ip("link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        self.hub.ip("addr", "add", "%s/%d" % (HUB4, PREFIX4), "dev", BRIDGE)
        self.hub.ip("addr", "add", "%s/%d" % (HUB6, PREFIX6), "dev", BRIDGE, "nodad")
        self.hub.ip("link", "set", BRIDGE, "up")
        for node in self.nodes:
            node.netns.create()
            self.save()
            hub_end = "ovzn%d" % node.index
            self.hub.ip("link", "add", hub_end, "type", "veth", "peer", "name", NODE_LINK, "netns", node.netns.name)
            self.hub.ip("link", "set", hub_end, "master", BRIDGE, "up")
            node.netns.ip("addr", "add", "%s/%d" % (node.ip4, PREFIX4), "dev", NODE_LINK)
            node.netns.ip("addr", "add", "%s/%d" % (node.ip6, PREFIX6), "dev", NODE_LINK, "nodad")
            node.netns.ip("link", "set", NODE_LINK, "up")
            # What the ovz_host role sets on a real host: forwarding and proxy NDP.
            for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.all.proxy_ndp",
                        "net.ipv6.conf.%s.proxy_ndp" % NODE_LINK):
                node.netns.sysctl(key, 1)

    def _inventory(self) -> None:
        lines = ["[ovz_nodes]"]
        for node in self.nodes:
            lines.append("%s ansible_host=%s ovz_data_dir=%s ovz_cgroup_parent=%s ovz_netns=%s"
                         % (node.name, node.ip4, node.data_dir, node.cgroup_parent, node.netns.name))
        lines += ["", "[ovz_nodes:vars]", "ansible_user=root",
                  "ansible_ssh_private_key_file=%s" % self.client_key,
                  # No persistent ssh masters: one would outlive the harness, keep its netns alive and be
                  # reused by the next harness whose node has the same address. ControlPath=none: with
                  # ControlPersist in ssh_args Ansible adds its own ControlPath, and ssh then rides on any
                  # master another run left at the same address (another harness's node).
                  "ansible_ssh_args='-o ControlMaster=no -o ControlPath=none'",
                  "ansible_ssh_pipelining=true",
                  "ansible_ssh_common_args='-F /dev/null -o IdentitiesOnly=yes -o UserKnownHostsFile=%s "
                  "-o StrictHostKeyChecking=yes'" % self.known_hosts,
                  "ansible_python_interpreter=%s" % sys.executable, ""]
        with open(self.inventory, "w") as handle:
            handle.write("\n".join(lines))

    def close(self) -> None:
        """Remove everything: containers, sshd processes (by PID), netns, cgroup parents, the directory."""
        for node in self.nodes:
            node.destroy_containers()
        for node in self.nodes:
            node.stop_sshd()
            node.netns.delete()
            node.remove_cgroup_parent()
        self.hub.delete()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Harness":
        return self.up()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- helpers for tests --------------------------------------------------------------------
    def ansible_env(self) -> Dict[str, str]:
        return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_HOST_KEY_CHECKING="True",
                    ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")

    def playbook(self, playbook: str, extra: Sequence[str] = (), timeout: float = 600) -> subprocess.CompletedProcess:
        """``ansible-playbook`` against the inventory, run from the hub (the controller)."""
        binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        return self.hub.run([binary, "-i", self.inventory, playbook] + list(extra), check=False, timeout=timeout,
                            env=self.ansible_env())

    def tcp_connect(self, address: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from the hub (a third namespace) to ``address``:``port``."""
        fd = os.open(self.hub.path, os.O_RDONLY)
        try:
            return _connect_in(fd, address, port, timeout)
        finally:
            os.close(fd)


def _connect_in(netns_fd: int, address: str, port: int, timeout: float) -> socket.socket:
    """Make the socket in a thread that entered the netns (sockets keep the netns they were made in)."""
    import threading
    from ansible_collections.ovz.containers.plugins.module_utils._engine.kernel import namespaces as ns
    box: Dict[str, Any] = {}

    def target() -> None:
        try:
            ns.setns(netns_fd, ns.CLONE_NEWNET)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect((address, port))
            box["sock"] = sock
        except BaseException as exc:  # noqa: B036 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


def sweep_harness(record: Dict[str, Any], log: Any = print) -> None:
    """Remove what a harness recorded in harness.json (for scripts/sweep.py after a crash)."""
    for node in record.get("nodes", []):
        if kill_recorded(node.get("sshd_pid") or 0, node.get("sshd_starttime")):
            log("sweep: ended sshd %s of harness %s" % (node.get("sshd_pid"), record.get("tag")))


try:
    import pytest
except ImportError:  # pragma: no cover - the harness also runs without pytest (bench, by hand)
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def harness(session_dir):  # pylint: disable=redefined-outer-name
        """Three nodes for the tests of one module (import this fixture into the test module)."""
        with Harness(os.path.join(session_dir, "mn-" + uuid.uuid4().hex[:6]), 3) as result:
            yield result


def main(argv: Sequence[str]) -> int:
    """``multinode.py up DIR [COUNT]``: bring a harness up and leave it; ``down DIR``: remove it."""
    if len(argv) >= 2 and argv[0] == "up":
        harness = Harness(argv[1], int(argv[2]) if len(argv) > 2 else 2).up()
        print(json.dumps({"inventory": harness.inventory, "hub": harness.hub.name}))
        return 0
    if len(argv) == 2 and argv[0] == "down":
        with open(os.path.join(argv[1], HARNESS_FILE)) as handle:
            record = json.load(handle)
        harness = Harness(record["base"], len(record["nodes"]), record["tag"])
        for node, saved in zip(harness.nodes, record["nodes"]):
            node.cgroup_parent = saved["cgroup_parent"]
            node.sshd_pid, node.sshd_starttime = saved["sshd_pid"], saved["sshd_starttime"]
        harness.close()
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2
