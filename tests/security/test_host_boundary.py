# -*- coding: utf-8 -*-
"""What the host reads or runs must say nothing of, and take nothing from, a container.

A container's root is a stranger: the host's tools never import code from where the operator
stands (which may be a directory of a container's tree), never hold a container's output
without a bound, and nothing the host shows inside names a host path. Each test here is an
attack from the escape suite's point of view (README, "Security"), run against privileged and
unprivileged containers where a container takes part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO

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
