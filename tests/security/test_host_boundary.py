# -*- coding: utf-8 -*-
"""What the host reads or runs must say nothing of, and take nothing from, a container.

A container's root is a stranger: the host's tools never import code from where the operator
stands (which may be a directory of a container's tree), never hold a container's output
without a bound, and nothing the host shows inside names a host path. Each test here is an
attack from the escape suite's point of view (README, "Security"), run against privileged and
unprivileged containers where a container takes part.
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

import pytest

from support import COLLECTIONS_ROOT, REPO
from support.node import new_node, sh

from support.netlab import routed_lab  # noqa: F401  pylint: disable=unused-import
OVZCTL = os.path.join(REPO, "scripts", "ovzctl")
ZIPAPP_BUILDER = os.path.join(REPO, "roles", "ovz_host", "files", "ovzctl_zipapp.py")
ENGINE_DIR = os.path.join(REPO, "plugins", "module_utils")
PRIVILEGES = [pytest.param(False, id="privileged"), pytest.param(True, id="unprivileged")]

# Modules ovzctl imports at once (argparse, json, os, ...), the hooks site.py runs by itself
# (sitecustomize, usercustomize) and a package shadowing the engine's own top-level package.
PLANTED = ("argparse", "json", "os", "subprocess", "collection_path", "sitecustomize", "usercustomize", "fcntl",
           "ctypes", "typing")


def plant(directory: str, marker: str) -> None:
    """Python files in ``directory`` that leave ``marker`` behind when imported."""
    code = "open(%r, 'a').write(__name__ + '\\n')\n" % marker
    for name in PLANTED:
        with open(os.path.join(directory, name + ".py"), "w") as handle:
            handle.write(code)
    package = os.path.join(directory, "ansible_collections")
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w") as handle:
        handle.write(code)
    # The user site directory, as PYTHONUSERBASE would name it.
    site = os.path.join(directory, "userbase", "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    os.makedirs(site)
    with open(os.path.join(site, "usercustomize.py"), "w") as handle:
        handle.write(code)


def test_planted_modules_in_the_current_directory_are_not_imported(node, container):
    """The operator stands in a directory a container's root filled with modules, with PYTHONPATH and
    PYTHONUSERBASE pointing there: ``ovzctl`` (the checkout's script and the zipapp the ovz_host role
    installs on nodes, whose shebang is also what its systemd units run) imports none of them."""
    name = container
    with tempfile.TemporaryDirectory(prefix="ovz-planted-") as tmp:
        trap = os.path.join(tmp, "trap")
        os.makedirs(trap)
        marker = os.path.join(tmp, "imported")
        plant(trap, marker)
        zipapp = os.path.join(tmp, "ovzctl")
        subprocess.run([sys.executable, "-I", ZIPAPP_BUILDER, ENGINE_DIR, zipapp], check=True)
        env = dict(os.environ, PYTHONPATH=trap, PYTHONUSERBASE=os.path.join(trap, "userbase"),
                   PYTHONSTARTUP=os.path.join(trap, "os.py"))
        common = ["--data-dir", node.data_dir, "--cgroup-parent", node.cgroup_parent]
        for program in (OVZCTL, zipapp):
            for argv in ([program, "--help"], [program] + common + ["list"], [program] + common + ["status", name],
                         [program] + common + ["bcd", "status"]):
                proc = subprocess.run(argv, cwd=trap, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      universal_newlines=True, timeout=120, check=False)
                imported = open(marker).read() if os.path.exists(marker) else ""
                assert imported == "", "%s imported planted modules: %s" % (argv, imported.split())
                assert proc.returncode in (0, 3), (argv, proc.stderr)
                if argv[-1] == "list":
                    assert name in proc.stdout
                if argv[-2:] == ["status", name]:
                    assert json.loads(proc.stdout)["name"] == name


# -- output without bound ----------------------------------------------------------------------------

FLOOD = "dd if=/dev/zero bs=1M count=2048 status=none; dd if=/dev/zero bs=1M count=1024 status=none >&2"
GROWTH_BOUND = 256 << 20
# Runs ARGV as a child and reports the peak RSS of its process tree (every process it waited for): a fresh
# process, so nothing of the test's own children counts. Address space is capped at 4 GiB as a safety net
# for the shared machine: without the bound, the buffered flood ends in MemoryError there instead of at 10 GB.
MEASURE = r"""
import json, resource, subprocess, sys
out = open(sys.argv[1], "wb")
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
proc = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.PIPE, preexec_fn=cap, check=False)
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr.decode(errors="replace")[-2000:],
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def measured(argv, env=None, timeout=900):
    """(peak RSS in bytes of ``argv``'s process tree, its rc, its stdout, its stderr's end)."""
    with tempfile.NamedTemporaryFile(prefix="ovz-measure-") as out:
        proc = subprocess.run([sys.executable, "-I", "-c", MEASURE, out.name] + list(argv), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout, check=True)
        report = json.loads(proc.stdout)
        with open(out.name, "rb") as handle:
            stdout = handle.read(64 << 20)
    return report["peak"], report["rc"], stdout, report["stderr"]


def module_argv(module, args):
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="ovz-args-", delete=False)
    with handle:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=False, _ansible_diff=False)}, handle)
    return [sys.executable, os.path.join(REPO, "plugins", "modules", module + ".py"), handle.name], handle.name


def limited_container(node, busybox_template, unprivileged):
    from ansible_collections.ovz.containers.plugins.module_utils._engine.ops import limits as lim
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory", unprivileged=unprivileged)
    node.manager.start(name, wait_boot=True, timeout=20)
    lim.update(node.manager, name, {"ram": "64M", "swap": 0})
    return name


def module_env():
    return dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)


@pytest.mark.parametrize("unprivileged", PRIVILEGES)
def test_output_flood_through_ovz_exec_is_bounded(node, busybox_template, unprivileged):
    """3 GB printed (2 GB on stdout, 1 GB on stderr) by a container capped at ram 64M: ovz_exec ends
    with the last output_limit bytes of each stream and how many it dropped, and its process tree
    grows by less than 256 MiB over the same module printing one line."""
    name = limited_container(node, busybox_template, unprivileged)
    common = {"name": name, "data_dir": node.data_dir, "cgroup_parent": node.cgroup_parent}
    results = {}
    for label, command in (("quiet", "echo hello"), ("flood", FLOOD)):
        argv, args_file = module_argv("ovz_exec", dict(common, command=command))
        try:
            peak, _rc, stdout, stderr = measured(argv, env=module_env())
        finally:
            os.unlink(args_file)
        assert stdout.lstrip().startswith(b"{"), (label, stdout[:200], stderr)
        results[label] = (peak, json.loads(stdout))
    (quiet_peak, quiet), (flood_peak, flood) = results["quiet"], results["flood"]
    assert flood.get("rc") == 0, flood.get("msg")
    assert quiet["stdout"] == "hello" and quiet["stdout_truncated"] == 0 and quiet["stderr_truncated"] == 0
    limit = 1 << 20
    assert (flood["stdout_truncated"], len(flood["stdout"])) == ((2048 << 20) - limit, limit - 0), \
        (flood["stdout_truncated"], len(flood["stdout"]))
    assert (flood["stderr_truncated"], len(flood["stderr"])) == ((1024 << 20) - limit, limit)
    assert flood_peak - quiet_peak < GROWTH_BOUND, (quiet_peak, flood_peak)


def test_ovz_exec_output_limit_keeps_the_tail(node, container):
    """output_limit is a size; the end of the stream is what is kept."""
    argv, args_file = module_argv("ovz_exec", {"name": container, "data_dir": node.data_dir,
                                               "cgroup_parent": node.cgroup_parent, "output_limit": "4K",
                                               "command": "seq 1 100000; echo tail-of-stderr >&2"})
    try:
        _peak, _rc, stdout, _stderr = measured(argv, env=module_env())
    finally:
        os.unlink(args_file)
    result = json.loads(stdout)
    everything = "".join("%d\n" % i for i in range(1, 100001))
    assert result["stdout"] == everything[-4096:].rstrip("\n")
    assert result["stdout_truncated"] == len(everything) - 4096
    assert (result["stderr"], result["stderr_truncated"]) == ("tail-of-stderr", 0)
    argv, args_file = module_argv("ovz_exec", {"name": container, "data_dir": node.data_dir,
                                               "cgroup_parent": node.cgroup_parent, "output_limit": "lots",
                                               "command": "true"})
    try:
        _peak, rc, stdout, _stderr = measured(argv, env=module_env())
    finally:
        os.unlink(args_file)
    result = json.loads(stdout)
    assert rc != 0 and "output_limit" in result["msg"], result


CONNECTION = r"""
import json, os, sys
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
name, data_dir, cgroup_parent, work, remote, what = sys.argv[1:]
conn = connection_loader.get("ovz.containers.ovz", PlayContext(), None)
options = {"ovz_container": name, "ovz_data_dir": data_dir, "ovz_cgroup_parent": cgroup_parent}
if remote:
    options.update(ovz_node_shell=["/bin/sh", "-c"], ovz_ovzctl=remote)
conn.set_options(var_options=options)
result = {}
if what == "flood":
    try:
        result["exec"] = list(conn.exec_command(%r)[:1])
    except Exception as exc:
        result["error"] = "%%s: %%s" %% (type(exc).__name__, exc)
elif what == "fetch":
    out = os.path.join(work, "big.out")
    conn.fetch_file("/root/big", out)
    result["size"] = os.path.getsize(out)
    with open(out, "rb") as handle:
        handle.seek(-6, 2)
        result["end"] = handle.read().decode()
    os.unlink(out)
else:
    result["exec"] = list(conn.exec_command("echo hello")[:1])
conn.close()
print(json.dumps(result))
""" % FLOOD


@pytest.mark.parametrize("mode", ["local", "remote"])
@pytest.mark.parametrize("unprivileged", PRIVILEGES)
def test_output_flood_and_big_fetch_through_the_connection_plugin_are_bounded(node, busybox_template, tmp_path,
                                                                              unprivileged, mode):
    """Through the connection plugin (on this node through the engine, and as for a remote node through a
    shell and ovzctl): a 3 GB flood from exec_command fails clearly at output_limit (64M), and fetch_file of a
    512 MiB file streams it to the destination; the plugin's process tree grows by less than 256 MiB over an
    ``echo`` through the same plugin."""
    from support.ansible_cli import ansible_env  # pylint: disable=import-outside-toplevel
    name = limited_container(node, busybox_template, unprivileged)
    size = 512 << 20
    # A sparse file: the container's small disk holds it, its reads give every byte.
    node.manager.exec(name, ["/bin/sh", "-c", "truncate -s %d /root/big && printf 'ovzend' >> /root/big" % (size - 6)])
    remote = OVZCTL if mode == "remote" else ""
    peaks = {}
    results = {}
    for what in ("quiet", "flood", "fetch"):
        peak, rc, stdout, stderr = measured([sys.executable, "-c", CONNECTION, name, node.data_dir, node.cgroup_parent,
                                             str(tmp_path), remote, what], env=ansible_env())
        assert rc == 0, (what, stderr)
        peaks[what], results[what] = peak, json.loads(stdout.splitlines()[-1])
    assert results["quiet"] == {"exec": [0]}
    error = results["flood"].get("error", "")
    assert error.startswith("AnsibleConnectionFailure") and "output_limit" in error, results["flood"]
    assert results["fetch"] == {"size": size, "end": "ovzend"}
    for what in ("flood", "fetch"):
        assert peaks[what] - peaks["quiet"] < GROWTH_BOUND, (what, peaks)


# -- paths and names that say nothing of the host --------------------------------------------------


@contextlib.contextmanager
def node_under_tmp(tmpfs):
    """A node whose data dir lies under /tmp, on the host's /tmp itself or on a tmpfs mounted there."""
    base = tempfile.mkdtemp(prefix="ovz-tmpnode-", dir="/tmp")
    mounted = False
    try:
        if tmpfs:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "ovz-test-tmpfs", base], check=True)
            mounted = True
        with new_node(base) as node:
            yield node
    finally:
        if mounted:
            subprocess.run(["umount", base], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("unprivileged", PRIVILEGES)
@pytest.mark.parametrize("tmpfs", [pytest.param(False, id="tmp"), pytest.param(True, id="tmpfs-on-tmp")])
def test_data_dir_under_tmp_works_for_both_kinds(busybox_template, tmpfs, unprivileged):
    """The unprivileged start stages what the container needs on a tmpfs over /tmp of its own mount
    namespace: a data dir under /tmp must still be reachable there (it failed with
    ``FileNotFoundError: mount: '/tmp/console'``)."""
    with node_under_tmp(tmpfs) as node:
        for layout in ("image", "directory"):
            name = node.name()
            node.manager.create(name, busybox_template, layout=layout, unprivileged=unprivileged)
            node.manager.start(name, wait_boot=True, timeout=20)
            result = node.manager.exec(name, ["/bin/sh", "-c", "hostname; echo hi > /dev/console; id -u"])
            assert (result.rc, result.stdout) == (0, ("%s\n0\n" % name).encode()), result
            assert node.manager.stop(name)
            node.manager.destroy(name)


@pytest.mark.parametrize("unprivileged", PRIVILEGES)
def test_nameserver_without_resolv_conf(routed_lab, unprivileged):
    """nameserver= on a running container that has no /etc/resolv.conf: the file is made, belongs to the
    container's root (an unprivileged container's root mount is idmapped, and a file host root made there
    had no owner the mount could map: EOVERFLOW, "Value too large for defined data type")."""
    lab = routed_lab
    name = lab.node.name()
    lab.manager.create(name, lab.template, layout="image", unprivileged=unprivileged)
    lab.start(name)
    sh(lab.manager, name, "rm -f /etc/resolv.conf")
    result = lab.network(name, nameserver=["10.213.1.1"], searchdomain=["ovz.test"])
    assert result["changed"] and not result.get("failed"), result
    inside = sh(lab.manager, name, "stat -c '%u:%g %a' /etc/resolv.conf; cat /etc/resolv.conf").stdout.decode()
    assert inside.splitlines()[0] == "0:0 644", inside
    assert inside.splitlines()[2:] == ["search ovz.test", "nameserver 10.213.1.1"], inside
    # And at the next start, from the stopped container's own tree.
    lab.stop(name)
    lab.start(name)
    sh(lab.manager, name, "rm -f /etc/resolv.conf")
    lab.stop(name)
    lab.start(name)
    inside = sh(lab.manager, name, "stat -c '%u:%g' /etc/resolv.conf; cat /etc/resolv.conf").stdout.decode()
    assert inside.splitlines()[0] == "0:0" and "nameserver 10.213.1.1" in inside, inside


LOOP_PROBE = ("for f in /sys/block/*/loop/backing_file /sys/class/block/*/loop/backing_file "
              "/sys/dev/block/*/loop/backing_file /sys/devices/virtual/block/*/loop/backing_file; do "
              "[ -e \"$f\" ] && echo \"$f: $(cat $f)\"; done; find /sys -name backing_file 2>/dev/null; true")


@pytest.mark.parametrize("unprivileged", PRIVILEGES)
def test_loop_backing_files_are_hidden_inside(node, busybox_template, unprivileged):
    """Every loop device's backing file (each image-layout container's image path on the host) shows in
    /sys/block/loop*/loop/backing_file; the container's /sys hides the virtual block devices."""
    name = node.name()
    node.manager.create(name, busybox_template, layout="image", unprivileged=unprivileged)
    node.manager.start(name, wait_boot=True, timeout=20)
    host = subprocess.run(["sh", "-c", LOOP_PROBE], stdout=subprocess.PIPE, universal_newlines=True,
                          check=True).stdout
    assert node.data_dir in host   # this container's image is a loop device's backing file
    inside = sh(node.manager, name, LOOP_PROBE).stdout.decode()
    assert inside == "", inside
    # The container's own disk is still its root, and sysfs otherwise works.
    assert b"lo" in sh(node.manager, name, "ls /sys/class/net").stdout.split()


MASK_UNLOCKED = (
    "the mask is a mount of the container's own mount namespace, made after it passed to the container's user "
    "namespace, so it is not locked: root inside (both kinds) can unmount it and read backing_file again. Locking it "
    "needs the container's sysfs mounted and masked by host root (in the container's netns) before the mount "
    "namespace is copied into the container's user namespace; a privileged container keeps CAP_SYS_ADMIN anyway")


@pytest.mark.xfail(reason=MASK_UNLOCKED, strict=True)
@pytest.mark.parametrize("unprivileged", PRIVILEGES)
def test_loop_backing_files_after_unmounting_the_mask(node, busybox_template, unprivileged):
    name = node.name()
    node.manager.create(name, busybox_template, layout="image", unprivileged=unprivileged)
    node.manager.start(name, wait_boot=True, timeout=20)
    inside = sh(node.manager, name, "umount /sys/devices/virtual/block 2>/dev/null; " + LOOP_PROBE).stdout.decode()
    assert node.data_dir not in inside


# -- the live beancounters view --------------------------------------------------------------------

HAMMER_SECONDS = 6
HAMMER = ("end=$(( $(date +%%s) + %d )); for i in $(seq 16); do"
          " ( n=0; while [ $(date +%%s) -lt $end ]; do cat /run/ovz/user_beancounters >/dev/null 2>&1; n=$((n+1));"
          " done; echo $n ) & done; wait" % HAMMER_SECONDS)


def _cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime (this and its threads)


def test_bcd_bounds_what_one_containers_readers_take(node, busybox_template):
    """16 readers inside one container open /run/ovz/user_beancounters in a loop for a few seconds: bcd
    computes that container's table at most once per MIN_ROUND_GAP (its counter, shown by ``bcd status``),
    however many opens come; every reader still gets a table. bcd's CPU time over the window is reported."""
    from ansible_collections.ovz.containers.plugins.module_utils._tools import bcd  # pylint: disable=import-outside-toplevel
    ctl = [OVZCTL, "--data-dir", node.data_dir, "bcd"]
    name = node.name()
    node.manager.create(name, busybox_template, layout="directory", unprivileged=False)   # the live view's kind
    node.manager.start(name, wait_boot=True, timeout=20)
    subprocess.run(ctl + ["start", "--interval", "0.2"], check=True, stdout=subprocess.PIPE)
    try:
        state = json.loads(subprocess.run(ctl + ["status"], stdout=subprocess.PIPE, check=True).stdout)
        pid = state["pid"]
        for _attempt in range(100):
            if name in json.loads(subprocess.run(ctl + ["status"], stdout=subprocess.PIPE, check=False).stdout)["bound"]:
                break
            time.sleep(0.1)
        ticks = _cpu_ticks(pid)
        out = node.manager.exec(name, ["/bin/sh", "-c", HAMMER], timeout=120).stdout.decode()
        cpu = (_cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
        opens = sum(int(n) for n in out.split())
        time.sleep(0.6)   # the daemon writes its counts every interval
        state = json.loads(subprocess.run(ctl + ["status"], stdout=subprocess.PIPE, check=True).stdout)
        computed = state["computed"].get(name, 0)
        # The window is HAMMER_SECONDS plus the start of the shells; 2 s of slack is plenty for rounds.
        bound = (HAMMER_SECONDS + 2) / bcd.MIN_ROUND_GAP
        assert 0 < computed <= bound, (computed, bound, opens, cpu)
        assert opens > 2 * computed, (opens, computed, cpu)
        print("bcd: %d opens, %d computations, %.2f s CPU over %d s" % (opens, computed, cpu, HAMMER_SECONDS))
        # And a reader still gets a whole table.
        assert sh(node.manager, name, "cat /run/ovz/user_beancounters").stdout.count(b"\n") > 20
    finally:
        subprocess.run(ctl + ["stop"], check=False, stdout=subprocess.PIPE)
