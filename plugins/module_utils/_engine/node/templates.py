# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ovz.containers developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""OS templates: finding them, and building the offline busybox one.

A template is a rootfs tarball (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``,
``.tar.zst``, ``.tar.bz2``), a rootfs directory, or the name of one of those
in the node's ``templates/`` directory (``busybox`` finds
``templates/busybox.tar.gz``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Iterator, Optional

from ..base.errors import InvalidParameter, OvzError

TEMPLATE_SUFFIXES = (".tar.zst", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")
BUSYBOX_TEMPLATE_VERSION = "2"

INITTAB = """\
# busybox init: run the startup scripts, and the stop scripts on halt.
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
::ctrlaltdel:/sbin/reboot
"""

RCS = """\
#!/bin/sh
# Startup: run /etc/init.d/S* in order, as sysvinit's rc does, then tell the
# host the boot is complete (ovz.containers waits for /run/ovz/booted).
for script in /etc/init.d/S[0-9][0-9]*; do
    [ -x "$script" ] && "$script" start
done
[ -d /run/ovz ] && : > /run/ovz/booted
exit 0
"""

RCK = """\
#!/bin/sh
# Shutdown: run the S* scripts in reverse order with "stop", then tell the
# host they are done (it then ends what is left instead of waiting for
# busybox's fixed two-second TERM/KILL pause).
for script in $(ls -r /etc/init.d/S[0-9][0-9]* 2>/dev/null); do
    [ -x "$script" ] && "$script" stop
done
[ -d /run/ovz ] && : > /run/ovz/halted
exit 0
"""

S10_LOOPBACK = """\
#!/bin/sh
case "$1" in
    start) ip link set lo up ;;
    stop) ip link set lo down ;;
esac
exit 0
"""

ETC_FILES = {
    "etc/inittab": (INITTAB, 0o644),
    "etc/init.d/rcS": (RCS, 0o755),
    "etc/init.d/rcK": (RCK, 0o755),
    "etc/init.d/S10loopback": (S10_LOOPBACK, 0o755),
    "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
    "etc/group": ("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n", 0o644),
    "etc/shadow": ("root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640),
    "etc/hostname": ("localhost\n", 0o644),
    "etc/hosts": ("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n", 0o644),
    "etc/ovz-template": ("busybox %s\n" % BUSYBOX_TEMPLATE_VERSION, 0o644),
}
DIRECTORIES = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "proc", "sys", "dev", "run", "tmp",
               "root", "var/log", "var/run", "home", "mnt")


def template_candidates(name: str, templates_dir: str) -> Iterator[str]:
    for suffix in TEMPLATE_SUFFIXES:
        yield os.path.join(templates_dir, name + suffix)
    yield os.path.join(templates_dir, name)


def resolve_template(template: str, templates_dir: str) -> str:
    """The absolute path of ``template``, or InvalidParameter naming ``template``."""
    if not isinstance(template, str) or not template or "\0" in template:
        raise InvalidParameter("expected a tarball, a directory or a template name, got %r" % (template,),
                               "template")
    if "/" in template:
        path = os.path.abspath(template)
        if os.path.isdir(path):
            return path
        if not os.path.isfile(path):
            raise InvalidParameter("%s does not exist" % path, "template")
        if not path.endswith(TEMPLATE_SUFFIXES):
            raise InvalidParameter("%s is not a rootfs tarball (%s) or directory"
                                   % (path, ", ".join(TEMPLATE_SUFFIXES)), "template")
        return path
    from .config import NAME_RE
    if not NAME_RE.fullmatch(template):
        raise InvalidParameter("%r is neither a path nor a template name" % (template,), "template")
    for candidate in template_candidates(template, templates_dir):
        if os.path.isdir(candidate) or (os.path.isfile(candidate) and candidate.endswith(TEMPLATE_SUFFIXES)):
            return os.path.realpath(candidate)
    raise InvalidParameter("no template named %r in %s" % (template, templates_dir), "template")


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_busybox_rootfs(target: str, busybox: str = "/bin/busybox") -> None:
    """Lay out a minimal busybox system in ``target`` (an empty directory)."""
    for directory in DIRECTORIES:
        os.makedirs(os.path.join(target, directory), exist_ok=True)
    os.chmod(os.path.join(target, "tmp"), 0o1777)
    os.chmod(os.path.join(target, "root"), 0o700)
    shutil.copy2(busybox, os.path.join(target, "bin", "busybox"))
    os.chmod(os.path.join(target, "bin", "busybox"), 0o755)
    applets = subprocess.run([busybox, "--list-full"], stdout=subprocess.PIPE, check=True,
                             universal_newlines=True).stdout.split()
    for applet in applets:
        path = os.path.join(target, applet)
        if os.path.lexists(path) or applet == "bin/busybox":
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Hard links, not symlinks: busybox dispatches on argv[0] either way,
        # and a hard link costs a fraction of a symlink to create and unpack.
        os.link(os.path.join(target, "bin", "busybox"), path)
    for rel, (text, mode) in ETC_FILES.items():
        path = os.path.join(target, rel)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)


def build_busybox_template(dest_dir: str, busybox: str = "/bin/busybox") -> str:
    """Build (once; cached by content) ``<dest_dir>/busybox.tar.gz``; returns its path."""
    if not os.path.isfile(busybox):
        raise OvzError("%s not found: install Debian's busybox-static" % busybox, "busybox")
    key = hashlib.sha256((_sha256_file(busybox) + BUSYBOX_TEMPLATE_VERSION +
                          repr(sorted(ETC_FILES.items()))).encode()).hexdigest()[:12]
    os.makedirs(dest_dir, mode=0o755, exist_ok=True)
    final = os.path.join(dest_dir, "busybox-%s.tar.gz" % key)
    link = os.path.join(dest_dir, "busybox.tar.gz")
    if not os.path.isfile(final):
        work = tempfile.mkdtemp(prefix="ovz-tpl-", dir=dest_dir)
        try:
            rootfs = os.path.join(work, "rootfs")
            os.mkdir(rootfs)
            build_busybox_rootfs(rootfs, busybox)
            tarball = os.path.join(work, "busybox.tar.gz")
            subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "--sort=name", "-czf", tarball,
                            "-C", rootfs, "."], check=True)
            os.rename(tarball, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _replace_symlink(os.path.basename(final), link)
    return final


def _replace_symlink(target: str, link: str) -> None:
    if os.path.islink(link) and os.readlink(link) == target:
        return
    tmp = link + ".%d.tmp" % os.getpid()
    os.symlink(target, tmp)
    os.rename(tmp, link)


def find_template(name: str, templates_dir: str) -> Optional[str]:
    try:
        return resolve_template(name, templates_dir)
    except InvalidParameter:
        return None
