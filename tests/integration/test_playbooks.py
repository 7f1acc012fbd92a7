# -*- coding: utf-8 -*-
"""playbooks/site.yml on the multi-node harness (issue 8): two nodes from scratch, then idempotent.

The controller runs in the harness hub and reaches each node over SSH (tests/support/multinode.py). The
nodes share this machine's filesystem, so ovz_host runs with what would change the machine itself
turned off or pointed into the node's directory (no packages, CRIU or LXCFS; the sysctl file and
ovzctl under the node's base); everything else is the real playbook: the role's kernel settings in
the node's netns, the busybox template built once on node 1 (a build host that is not the controller:
ovzctl's engine builds it, the controller fetches it) and copied to both nodes, and
the fleet converged on each node.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from support import REPO
from support.multinode import Harness

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

SITE = os.path.join(REPO, "playbooks", "site.yml")
ADDRESSES = {"ovzsite1": ("node1", "10.213.201.31"), "ovzsite2": ("node2", "10.213.201.32"),
             "ovzsite3": ("node2", "10.213.201.33")}
GROUP_VARS = """\
ovz_host_packages: []
ovz_host_criu: false
ovz_host_lxcfs: false
ovz_host_sysctl_file: "{{ ovz_data_dir }}/../60-ovz.conf"
ovz_host_ovzctl: "{{ ovz_data_dir }}/../ovzctl"
ovz_template_build: [busybox]
ovz_template_build_packages: false
# Built on node1 (with the ovzctl the first play installed there), fetched to the controller, copied to both.
ovz_template_build_host: node1
ovz_template_engine: %(base)s/node1/ovzctl
ovz_template_cache_dir: %(base)s/cache
ovz_template_fetch_dir: %(base)s/fetched
ovz_fleet_name: site
ovz_fleet_containers:
  - {name: ovzsite1, node: node1, template: busybox, layout: directory, labels: {role: web},
     limits: {cpuunits: 2000, ram: 96M, numproc: 64}, network: {ip_address: ['10.213.201.31']}}
  - {name: ovzsite2, node: node2, template: busybox, layout: directory, labels: {role: web},
     limits: {cpuunits: 2000, ram: 96M, numproc: 64}, network: {ip_address: ['10.213.201.32']}}
  - {name: ovzsite3, node: node2, template: busybox, layout: directory, state: stopped}
"""
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@pytest.fixture(scope="module")
def site(session_dir):
    """A two-node harness with the inventory's group_vars for site.yml."""
    with Harness(os.path.join(session_dir, "site-" + uuid.uuid4().hex[:6]), 2) as harness:
        os.makedirs(os.path.join(harness.base, "group_vars"))
        with open(os.path.join(harness.base, "group_vars", "ovz_nodes.yml"), "w") as handle:
            handle.write(GROUP_VARS % {"base": harness.base})
        yield harness


def recap(proc):
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    found = {host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unr), "failed": int(failed)}
             for host, ok, changed, unr, failed in RECAP.findall(proc.stdout)}
    assert set(found) >= {"node1", "node2"}, output[-4000:]
    return found


def test_site_from_scratch_then_idempotent(site):
    first = recap(site.playbook(SITE, timeout=900))
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in first.values())
    assert first["node1"]["changed"] > 0 and first["node2"]["changed"] > 0

    # Each node has the template (the same file), its own containers, running or stopped as declared.
    sums = set()
    for node in site.nodes:
        link = os.path.join(node.data_dir, "templates", "busybox.tar.gz")
        assert os.path.islink(link) and re.fullmatch(r"busybox-[0-9a-f]{12}\.tar\.gz", os.readlink(link))
        sums.add(node.ssh("sha256sum %s" % link).stdout.split()[0])
        assert os.path.isfile(os.path.join(node.data_dir, "..", "ovzctl"))
        assert node.netns.run(["sysctl", "-n", "net.ipv6.conf.all.proxy_ndp"]).stdout.strip() == "1"
    assert len(sums) == 1
    # Built once, on node1, and fetched to the controller: the same file in the cache and on every node.
    built = [name for name in os.listdir(os.path.join(site.base, "cache")) if name.startswith("busybox-")]
    assert len(built) == 1 and os.listdir(os.path.join(site.base, "fetched")) == built
    assert os.readlink(os.path.join(site.nodes[0].data_dir, "templates", "busybox.tar.gz")) == built[0]
    node1, node2 = site.nodes
    assert node1.engine("manager.layout.names()") == ["ovzsite1"]
    assert node2.engine("manager.layout.names()") == ["ovzsite2", "ovzsite3"]
    states = {name: site.nodes[int(node[-1]) - 1].engine("manager.status(%r)" % name)
              for name, (node, _ip) in ADDRESSES.items()}
    assert states == {"ovzsite1": "running", "ovzsite2": "running", "ovzsite3": "stopped"}
    # Routed addresses answer from the hub (a third namespace), through each node's proxy ARP.
    for name in ("ovzsite1", "ovzsite2"):
        assert site.hub.ping(ADDRESSES[name][1]), name
    labels = node1.engine("manager.facts('ovzsite1')['labels']")
    assert labels == {"role": "web", "ovz_fleet": "site"}

    # The second run changes nothing, nor does a run in check mode.
    second = recap(site.playbook(SITE, timeout=900))
    assert {host: r["changed"] for host, r in second.items()} == {host: 0 for host in second}, json.dumps(second)
    checked = recap(site.playbook(SITE, ["--check"], timeout=900))
    assert {host: r["changed"] for host, r in checked.items()} == {host: 0 for host in checked}, json.dumps(checked)
