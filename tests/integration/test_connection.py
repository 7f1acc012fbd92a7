# -*- coding: utf-8 -*-
"""The connection plugin ovz.containers.ovz: ordinary Ansible tasks run inside a container
(issue 8). Real ansible-playbook runs; results are checked from the host."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from support import REPO
from support.node import sh
from support.debian import wait_system_running
from support.ansible_cli import BIN, ansible_env, recap, run

PLUGIN = "ovz.containers.ovz"
OVZCTL = os.path.join(REPO, "scripts", "ovzctl")


def write_inventory(path, node, hosts, **hostvars):
    """An INI inventory: each host is a container of ``node``, reached through the plugin."""
    lines = ["[ovz_cts]"]
    for alias, name in hosts.items():
        lines.append("%s ovz_container=%s" % (alias, name))
    lines.append("[ovz_cts:vars]")
    variables = dict(ansible_connection=PLUGIN, ovz_data_dir=node.data_dir, ovz_cgroup_parent=node.cgroup_parent,
                     ansible_python_interpreter="/usr/bin/python3")
    variables.update(hostvars)
    lines += ["%s=%s" % item for item in variables.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def playbook(inventory, play, extra=None, **env):
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", inventory, str(play)]
    if extra:
        argv += ["-e", json.dumps(extra)]
    return run(argv, **env)


def build_deb(directory):
    """ovz-test-greeter 1.0: a systemd service that copies its configuration to /run and stays up."""
    pkg = directory / "ovz-test-greeter"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "lib/systemd/system").mkdir(parents=True)
    (pkg / "usr/bin").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text(
        "Package: ovz-test-greeter\nVersion: 1.0\nArchitecture: all\nMaintainer: ovz tests <root@localhost>\n"
        "Description: test service for the ovz connection plugin\n")
    (pkg / "usr/bin/ovz-test-greeter").write_text(
        "#!/bin/sh\ncat /etc/ovz-greeter.conf > /run/ovz-greeter.out\nexec sleep infinity\n")
    os.chmod(pkg / "usr/bin/ovz-test-greeter", 0o755)
    (pkg / "lib/systemd/system/ovz-test-greeter.service").write_text(
        "[Unit]\nDescription=ovz test greeter\n\n[Service]\nExecStart=/usr/bin/ovz-test-greeter\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    deb = directory / "ovz-test-greeter_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)
    return deb


DEBIAN_PLAY = """
- name: Inside the container, through the connection plugin
  hosts: ovz_cts
  gather_facts: true
  vars:
    ovz_greeting: hello from ansible
  handlers:
    - name: Restart greeter
      ansible.builtin.service:
        name: ovz-test-greeter
        state: restarted
  tasks:
    - name: The package file
      ansible.builtin.copy:
        src: {deb}
        dest: /root/ovz-test-greeter_1.0_all.deb
        mode: "0644"

    - name: Install it with apt from the local .deb
      ansible.builtin.apt:
        deb: /root/ovz-test-greeter_1.0_all.deb

    - name: Its configuration from a template
      ansible.builtin.template:
        src: {template}
        dest: /etc/ovz-greeter.conf
        mode: "0644"
      notify: Restart greeter

    - name: A line edited in place
      ansible.builtin.lineinfile:
        path: /etc/default/ovz-greeter
        regexp: '^MODE='
        line: MODE=edited
        create: true
        mode: "0644"

    - name: The service, under the container's systemd
      ansible.builtin.service:
        name: ovz-test-greeter
        state: started
        enabled: true

    - name: A command sees the container, not the host
      ansible.builtin.command: cat /etc/hostname
      register: ovz_hostname
      changed_when: false

    - name: The container's hostname is what the facts say
      ansible.builtin.assert:
        that:
          - ovz_hostname.stdout == ansible_facts.nodename == "greeter.ovz.test"
          - ansible_facts.user_id == 'root'

    - name: Binary content in
      ansible.builtin.copy:
        src: {blob}
        dest: /root/ovz-blob.bin
        mode: "0600"

    - name: And back out
      ansible.builtin.fetch:
        src: /root/ovz-blob.bin
        dest: {fetched}/
        flat: true
"""


@pytest.mark.slow
def test_playbook_installs_a_package_and_templates_a_config(node, debian_template, tmp_path):
    name = node.name()
    node.manager.create(name, debian_template, layout="directory", hostname="greeter.ovz.test")
    node.manager.start(name)
    wait_system_running(node.manager, name)
    deb = build_deb(tmp_path)
    template = tmp_path / "greeter.conf.j2"
    template.write_text("greeting={{ ovz_greeting }}\nhost={{ ansible_facts.hostname }}\n")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 64 + b"\0\r\n\xff" + os.urandom(4096))
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    play = tmp_path / "play.yml"
    play.write_text(DEBIAN_PLAY.format(deb=deb, template=template, blob=blob, fetched=fetched))
    inventory = write_inventory(tmp_path / "hosts", node, {"greeter": name})

    first = playbook(inventory, play)
    assert first.returncode == 0, first.stdout
    assert recap(first.stdout)["greeter"]["changed"] >= 5, first.stdout
    # From the host: the package is installed inside, the file is where the container's root is,
    # the service runs under the container's systemd and read the templated file.
    root = node.manager.layout.root(name)
    status = sh(node.manager, name, "dpkg-query -W -f '${Status} ${Version}' ovz-test-greeter").stdout
    assert status == b"install ok installed 1.0"
    with open(os.path.join(root, "etc/ovz-greeter.conf")) as handle:
        assert handle.read() == "greeting=hello from ansible\nhost=greeter\n"
    with open(os.path.join(root, "etc/default/ovz-greeter")) as handle:
        assert handle.read() == "MODE=edited\n"
    assert sh(node.manager, name, "systemctl is-active ovz-test-greeter").stdout.strip() == b"active"
    assert sh(node.manager, name, "systemctl is-enabled ovz-test-greeter").stdout.strip() == b"enabled"
    assert b"greeting=hello from ansible" in sh(node.manager, name, "cat /run/ovz-greeter.out").stdout
    assert not os.path.exists("/etc/ovz-greeter.conf") and not os.path.exists("/usr/bin/ovz-test-greeter")
    # Binary content survives the round trip byte for byte.
    with open(os.path.join(root, "root/ovz-blob.bin"), "rb") as handle:
        assert handle.read() == blob.read_bytes()
    assert (fetched / "ovz-blob.bin").read_bytes() == blob.read_bytes()
    # Files written inside belong to the container's root.
    assert os.stat(os.path.join(root, "etc/ovz-greeter.conf")).st_uid == 0

    # Second run, pipelined this time: nothing changes.
    second = playbook(inventory, play, ANSIBLE_PIPELINING="1")
    assert second.returncode == 0, second.stdout
    assert recap(second.stdout)["greeter"]["changed"] == 0, second.stdout
    assert recap(second.stdout)["greeter"]["failed"] == 0, second.stdout


DIRECT = r"""
import hashlib, json, os, sys
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
name, data_dir, cgroup_parent, src, work, remote = sys.argv[1:]
conn = connection_loader.get("ovz.containers.ovz", PlayContext(), None)
options = {"ovz_container": name, "ovz_data_dir": data_dir, "ovz_cgroup_parent": cgroup_parent}
if remote:
    options.update(ovz_node_shell=["/bin/sh", "-c"], ovz_ovzctl=remote)
conn.set_options(var_options=options)
result = {}
conn.put_file(src, "/root/in.bin")
conn.fetch_file("/root/in.bin", os.path.join(work, "out.bin"))
rc, out, err = conn.exec_command("id -u; hostname; cat; exit 3", in_data=b"from stdin\n")
result["exec"] = [rc, out.decode(), err.decode()]
conn.put_file(src, "/root/a b'c\"d")
try:
    conn.fetch_file("/root/missing", os.path.join(work, "missing"))
except Exception as exc:
    result["missing"] = str(exc)
conn.close()
print(json.dumps(result))
"""


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_put_and_fetch_binary_and_exec_directly(node, container, tmp_path, mode):
    """The plugin as Ansible loads it, called directly: put_file, fetch_file, exec_command; on the
    local node through the engine, and as for a remote node, through a shell command and ovzctl."""
    payload = os.urandom(300000) + bytes(range(256))
    src = tmp_path / "in.bin"
    src.write_bytes(payload)
    proc = subprocess.run([sys.executable, "-c", DIRECT, container, node.data_dir, node.cgroup_parent, str(src),
                           str(tmp_path), OVZCTL if mode == "remote" else ""], env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    root = node.manager.layout.root(container)
    with open(os.path.join(root, "root", "in.bin"), "rb") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest()
    assert (tmp_path / "out.bin").read_bytes() == payload
    # exec_command: a shell string, stdin (as pipelining sends the module), exit status, root without become.
    assert result["exec"] == [3, "0\n%s\nfrom stdin\n" % container, ""]
    # A path with spaces and quotes is taken literally.
    assert os.path.exists(os.path.join(root, "root", "a b'c\"d"))
    # A missing file inside fails with the path in the message.
    assert "/root/missing" in result["missing"]
    assert not (tmp_path / "missing").exists()


def test_ad_hoc_raw_is_root_inside_and_a_stopped_container_fails_clearly(node, busybox_template, tmp_path):
    running, stopped = node.name(), node.name()
    for name in (running, stopped):
        node.manager.create(name, busybox_template, layout="directory")
    node.manager.start(running, wait_boot=True, timeout=20)
    inventory = write_inventory(tmp_path / "hosts", node, {"up": running, "down": stopped})
    adhoc = [os.path.join(BIN, "ansible"), "-i", inventory, "ovz_cts", "-m", "raw", "-a",
             "id -u; cat /proc/1/comm; hostname"]
    proc = run(adhoc)
    assert proc.returncode != 0, proc.stdout
    up = proc.stdout.split("up | ", 1)[1].split("\n\n")[0]
    assert "CHANGED" in up and "\n0\ninit\n%s" % running in up, proc.stdout
    down = proc.stdout.split("down | ", 1)[1].split("\n\n")[0]
    assert "UNREACHABLE" in down and "container %s in %s is stopped" % (stopped, node.data_dir) in down, down
    assert node.manager.status(stopped) == "stopped"  # nothing was started behind the user's back
