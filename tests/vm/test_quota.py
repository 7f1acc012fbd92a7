# -*- coding: utf-8 -*-
"""Disk quota on Debian's stock kernel (issue 6: ovz_quota), one batched play on one VM.

``directory`` layout: the XFS project quota of /var/lib/ovz (mounted prjquota) enforces block
and inode soft and hard limits with a grace time, all changed live. ``image`` layout: the
second level is turned on (restart=true), the container's root sets a user's quota with
``setquota``, that user's writes stop at the limit and ``repquota`` shows it; the module's
``users:`` path sets and reports the same; growing the running image is live (the VM's root
has CAP_SYS_RESOURCE), shrinking it fails.

The busybox template has no quota tools: the VM's own ``setquota``, ``repquota`` and ``quota``
(Debian's quota 4.06) are copied into the container with their libraries, as a package would
install them.
"""

from __future__ import annotations

import json

import pytest

MIB = 1 << 20
TOOLS = ("/usr/sbin/setquota", "/usr/sbin/repquota", "/usr/bin/quota")


def install_tools(root: str) -> str:
    """A raw command that copies the quota tools and their libraries into a container's tree."""
    return ("set -e; R=%s; for b in %s; do mkdir -p $R$(dirname $b); cp $b $R$b;"
            " for l in $(ldd $b | grep -o '/[^ ]*'); do mkdir -p $R$(dirname $l); cp -L $l $R$l; done; done;"
            " grep -q ^ovzq: $R/etc/passwd || echo 'ovzq:x:2000:2000::/home/ovzq:/bin/sh' >> $R/etc/passwd;"
            " grep -q ^ovzq2: $R/etc/passwd || echo 'ovzq2:x:2001:2001::/home/ovzq:/bin/sh' >> $R/etc/passwd;"
            " grep -q ^ovzq: $R/etc/group || echo 'ovzq:x:2000:' >> $R/etc/group;"
            " mkdir -p $R/home/ovzq && chown 2000:2000 $R/home/ovzq && chmod 1777 $R/home/ovzq; echo installed"
            % (root, " ".join(TOOLS)))


def exec_task(name: str, ct: str, command: str) -> dict:
    return {"name": name, "ovz.containers.ovz_exec": {"name": ct, "command": command}}


def quota_task(name: str, ct: str, check: bool = False, **options) -> dict:
    task = {"name": name, "ovz.containers.ovz_quota": dict(options, name=ct), "diff": True}
    if check:
        task["check_mode"] = True
    return task


SECTION = "echo ==== "


def sections(text: str) -> dict:
    """The parts of a combined command's output, split at its ``==== name`` lines."""
    found, name = {}, None
    for line in text.split("\n"):
        if line.startswith("==== "):
            name = line[5:].strip()
            found[name] = []
        elif name is not None:
            found[name].append(line)
    return {key: "\n".join(lines) for key, lines in found.items()}


@pytest.fixture(scope="module")
def image_play(ansible, vm1, vm_template, ct_names_module):
    """The image layout: online growth, then the second level from inside and through the module."""
    img, uimg = ct_names_module(2)
    root = "/var/lib/ovz/root/%s" % img
    uroot = "/var/lib/ovz/root/%s" % uimg
    users = [{"name": "ovzq2", "blocks": "1M:2M", "inodes": "10:20"}]
    inside = " ".join([
        SECTION + "mounts;", "grep ' / ' /proc/mounts; ls -l /dev | grep '^b';",
        "d=$(awk '$2==\"/\"{print $1}' /proc/mounts | tail -n 1); head -c 1 $d > /dev/null 2>&1; echo open-rc=$?;",
        SECTION + "setquota;", "setquota -u ovzq 1024 2048 0 0 / 2>&1 && echo set;",
        SECTION + "write;", "su ovzq -c 'dd if=/dev/zero of=/home/ovzq/f bs=1M count=5' 2>&1; sync;",
        "ls -ln /home/ovzq/f;",
        SECTION + "repquota;", "repquota -n / 2>&1; true"])
    tasks = [
        {"name": "start image", "ovz.containers.ovz_container": {
            "name": img, "template": vm_template, "state": "started", "wait_boot": True, "diskspace": "128M",
            "unprivileged": False}},
        quota_task("image grow live", img, diskspace="192M"),
        {"name": "image state after grow", "ansible.builtin.raw": "cat /var/lib/ovz/run/%s/state.json" % img},
        exec_task("image df after grow", img, "df -k / | tail -n 1"),
        quota_task("image shrink running", img, diskspace="96M"),
        quota_task("second level running", img, quotaugidlimit=100),
        quota_task("second level", img, quotaugidlimit=100, restart=True),
        {"name": "install quota tools", "ansible.builtin.raw": install_tools(root)},
        exec_task("inside", img, inside),
        quota_task("users set", img, quotaugidlimit=100, users=users),
        quota_task("users again", img, quotaugidlimit=100, users=users),
        {"name": "restart image", "ovz.containers.ovz_container": {"name": img, "state": "restarted",
                                                                   "wait_boot": True}},
        exec_task("repquota after restart", img, "repquota -v -n / 2>&1"),
        # An unprivileged container (the default): quotactl's changes need CAP_SYS_ADMIN in the initial user
        # namespace, so the second level is set from the host, through the module, and enforced inside.
        {"name": "start unprivileged", "ovz.containers.ovz_container": {
            "name": uimg, "template": vm_template, "state": "started", "wait_boot": True, "diskspace": "128M"}},
        quota_task("unprivileged second level", uimg, quotaugidlimit=100, restart=True),
        {"name": "install quota tools unprivileged", "ansible.builtin.raw": install_tools(uroot)},
        exec_task("unprivileged setquota inside", uimg, "id -u; setquota -u ovzq 1024 2048 0 0 / 2>&1; echo rc=$?"),
        quota_task("unprivileged users set", uimg, quotaugidlimit=100, users=[{"name": "ovzq", "blocks": "1M:2M"}]),
        exec_task("unprivileged write", uimg,
                  "su ovzq -c 'dd if=/dev/zero of=/home/ovzq/f bs=1M count=5' 2>&1; sync; ls -ln /home/ovzq/f"),
        quota_task("unprivileged usage", uimg, quotaugidlimit=100, users=[{"name": "ovzq", "blocks": "1M:2M"}]),
    ]
    return ansible.play(tasks, hosts=vm1.name), vm1.name


@pytest.fixture(scope="module")
def dir_play(ansible, vm1, vm_template, ct_names_module):
    """The directory layout: XFS project quota, soft and hard limits, grace, changed live."""
    dct, = ct_names_module(1)
    tasks = [
        {"name": "start directory", "ovz.containers.ovz_container": {
            "name": dct, "template": vm_template, "layout": "directory", "state": "started", "wait_boot": True}},
        quota_task("dir set", dct, diskspace="8M:16M", diskinodes="200:300", quotatime="1h"),
        quota_task("dir again", dct, diskspace="8M:16M", diskinodes="200:300", quotatime="1h"),
        {"name": "dir projid", "ansible.builtin.raw":
            "lsattr -pd /var/lib/ovz/private/%s; xfs_quota -x -c 'report -p -n -b -i' /var/lib/ovz" % dct},
        exec_task("dir write over soft", dct, SECTION + "df; df -k / | tail -n 1; " + SECTION +
                  "dd; dd if=/dev/zero of=/a bs=1M count=9 2>&1; sync; echo rc=$?"),
        quota_task("dir usage over soft", dct),
        exec_task("dir over hard", dct,
                  SECTION + "inodes; mkdir /many; i=0; while [ $i -lt 2000 ] && touch /many/f$i 2>/dev/null; do i=$((i+1));"
                  " done; echo $i; touch /many/last 2>&1; rm -rf /many; " + SECTION +
                  "blocks; dd if=/dev/zero of=/b bs=1M count=8 2>&1; sync; true"),
        quota_task("dir under usage", dct, diskspace="1M"),
        quota_task("dir raise live", dct, diskspace="28M:30M"),
        exec_task("dir write after raise", dct, "rm -f /b; dd if=/dev/zero of=/b bs=1M count=8 2>&1 && sync && echo ok"),
        quota_task("dir short grace", dct, diskspace="4M:30M", quotatime="2"),
        exec_task("dir grace expires", dct,
                  "dd if=/dev/zero of=/c bs=1M count=1 2>&1; sync; sleep 5; dd if=/dev/zero of=/d bs=1M count=1 2>&1;"
                  " sync; echo rc=$?"),
        quota_task("dir usage expired", dct),
    ]
    return ansible.play(tasks, hosts=vm1.name), vm1.name


def test_second_level_from_inside_with_setquota_and_repquota(image_play):
    result, host = image_play
    refused = result.failed(host, "second level running")
    assert "quotaugidlimit" in refused["msg"], refused
    on = result.ok(host, "second level")
    assert on["changed"] is True and on["restarted"] is True, on
    part = sections(result.stdout(host, "inside"))
    assert "usrquota" in part["mounts"] and "grpquota" in part["mounts"], part
    assert "open-rc=0" not in part["mounts"], part           # the node is there for quotactl, not for reading
    assert part["setquota"].strip().endswith("set"), part
    assert "Disk quota exceeded" in part["write"], part
    size = int(part["write"].strip().split("\n")[-1].split()[4])
    assert size <= 2 * MIB, part
    line = [row for row in part["repquota"].split("\n") if row.startswith("#2000")]
    assert line and "1024" in line[0] and "2048" in line[0], part


def test_module_users_path_sets_and_reports_the_same(image_play):
    result, host = image_play
    first = result.ok(host, "users set")
    assert first["changed"] is True, first
    users = first["usage"]["users"]
    assert users["2001"]["bytes_hard"] == 2 * MIB and users["2001"]["inodes_soft"] == 10, users
    assert users["2000"]["bytes_hard"] == 2 * MIB and users["2000"]["bytes_used"] > 1 * MIB, users
    assert result.ok(host, "users again")["changed"] is False
    report = result.stdout(host, "repquota after restart")
    line = [row for row in report.split("\n") if row.startswith("#2001")]
    assert line and "1024" in line[0] and "2048" in line[0], report


def test_image_grows_online_and_refuses_to_shrink_running(image_play):
    result, host = image_play
    started = result.ok(host, "start image")
    grown = result.ok(host, "image grow live")
    assert grown["changed"] is True and grown["restarted"] is False, grown
    assert json.loads(result.stdout(host, "image state after grow"))["init_pid"] == started["container"]["init_pid"]
    assert int(result.stdout(host, "image df after grow").split()[1]) > 0.8 * 192 * 1024
    shrink = result.failed(host, "image shrink running")
    assert "diskspace" in shrink["msg"] and "stopped" in shrink["msg"], shrink


def test_directory_layout_project_quota(dir_play):
    result, host = dir_play
    first = result.ok(host, "dir set")
    assert first["changed"] is True and first["quota"]["quotatime"] == 3600, first
    assert first["not_enforced"] == {}, first
    assert result.ok(host, "dir again")["changed"] is False
    report = result.stdout(host, "dir projid")
    projid = first["usage"]["source"].split()[-1]
    assert projid in report and "P" in report.split("\n")[0], report
    part = sections(result.stdout(host, "dir write over soft"))
    assert int(part["df"].split()[1]) == 8 * 1024, part      # df inside shows the project's limit (XFS: the soft one)
    assert "rc=0" in part["dd"], part


def test_directory_layout_enforces_soft_hard_and_grace_live(dir_play):
    result, host = dir_play
    over_soft = result.ok(host, "dir usage over soft")["usage"]
    assert over_soft["bytes_used"] > 8 * MIB and over_soft["grace_blocks"]["state"] == "running", over_soft
    part = sections(result.stdout(host, "dir over hard"))
    assert "Disk quota exceeded" in part["blocks"] or "No space left" in part["blocks"], part
    inodes = part["inodes"].strip().split("\n")
    assert 200 < int(inodes[0]) < 300 and ("quota" in inodes[1] or "space" in inodes[1]), part
    under = result.failed(host, "dir under usage")
    assert "diskspace" in under["msg"] and "below" in under["msg"], under
    raised = result.ok(host, "dir raise live")
    assert raised["changed"] is True and raised["applied"] is True
    assert result.stdout(host, "dir write after raise").endswith("ok")
    expired = result.stdout(host, "dir grace expires")
    assert "Disk quota exceeded" in expired or "No space left" in expired, expired     # XFS project: ENOSPC
    usage = result.ok(host, "dir usage expired")["usage"]
    assert usage["grace_blocks"]["state"] == "expired", usage


def test_unprivileged_second_level_is_set_from_the_host(image_play):
    """In an unprivileged container setquota is refused by the kernel (quotactl's changes need CAP_SYS_ADMIN
    in the initial user namespace); the module's users: path sets the same limit from the host, and the
    kernel enforces it on the user's writes inside."""
    result, host = image_play
    assert result.ok(host, "start unprivileged")["container"]["unprivileged"] is True
    assert result.ok(host, "unprivileged second level")["changed"] is True
    refused = result.stdout(host, "unprivileged setquota inside")
    assert refused.split("\n")[0].strip() == "0", refused                       # root inside
    assert "Operation not permitted" in refused and "rc=0" not in refused, refused
    assert result.ok(host, "unprivileged users set")["changed"] is True
    written = result.stdout(host, "unprivileged write")
    assert "Disk quota exceeded" in written, written
    assert int(written.strip().split("\n")[-1].split()[4]) <= 2 * MIB, written
    usage = result.ok(host, "unprivileged usage")
    assert usage["changed"] is False and usage["usage"]["users"]["2000"]["bytes_hard"] == 2 * MIB, usage
