# -*- coding: utf-8 -*-
"""Helpers of the VM tier (tests/vm): the VMs of a run, and batched Ansible plays against them.

The fixtures in conftest.py hand these out; test files import from here what they need
(``peer_of``, ``copy_to_vm``, ``PlayResult``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM_PY = os.path.join(REPO, "scripts", "vm.py")
BIN = os.path.dirname(sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))
VM_PYTHON = "/usr/bin/python3"
RUN_BASE = os.environ.get("OVZ_VM_RUN_BASE", "/var/tmp")


class Vm:
    """One VM of the run, as the tests see it."""

    def __init__(self, run: "VmRun", data: dict) -> None:
        self.run = run
        self.name = data["name"]
        self.index = data["index"]
        self.ssh_port = data["ssh_port"]
        self.private_ip = data["private_ip"]
        self.private_ip6 = data["private_ip6"]
        # runs made before releases were recorded are bookworm's
        self.release = data.get("release", "bookworm")
        self.debian = data.get("debian", "12")

    def sh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a shell command on the VM (as root, over the run's SSH master connection)."""
        proc = subprocess.run(["ssh", "-F", self.run.ssh_config, self.name, command], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("on %s: %r exited %d\nstdout: %s\nstderr: %s"
                                 % (self.name, command, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def reboot(self) -> None:
        """A real reboot (scripts/vm.py reboot): returns once SSH answers from the new boot."""
        subprocess.run([VM_PYTHON, VM_PY, "reboot", self.name, "--id", self.run.run_id], check=True, timeout=900)

    def __repr__(self) -> str:
        return "Vm(%s)" % self.name


class VmRun:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.dir = os.path.join(RUN_BASE, "ovz-vm-" + run_id)
        self.inventory = os.path.join(self.dir, "inventory.ini")
        self.ssh_config = os.path.join(self.dir, "ssh_config")
        with open(os.path.join(self.dir, "state.json")) as handle:
            self.state = json.load(handle)
        self.vms = [Vm(self, data) for data in self.state["vms"]]
        self.releases = sorted({vm.release for vm in self.vms})
        self.internet = bool(self.state.get("internet"))


class PlayResult:
    def __init__(self, rc: int, output: str, results: dict) -> None:
        self.rc = rc
        self.output = output
        self.results = results

    def get(self, host: str, task: str) -> dict:
        try:
            return self.results[host][task]
        except KeyError:
            raise AssertionError("no result for task %r on %s; play output:\n%s"
                                 % (task, host, self.output[-6000:])) from None

    def ok(self, host: str, task: str) -> dict:
        result = self.get(host, task)
        assert result["_status"] == "ok", "task %r failed on %s: %s" % (task, host, _short(result))
        return result

    def stdout(self, host: str, task: str) -> str:
        """The stdout of a task that succeeded, without the final newline ``raw`` leaves."""
        return self.ok(host, task)["stdout"].rstrip("\r\n")

    def failed(self, host: str, task: str) -> dict:
        result = self.get(host, task)
        assert result["_status"] == "failed", "task %r was expected to fail on %s: %s" % (task, host, _short(result))
        return result


def _short(result: dict) -> str:
    keys = ("msg", "rc", "stdout", "stderr", "changed", "container", "exception")
    return json.dumps({k: result[k] for k in keys if k in result}, indent=1, default=str)[:4000]


class Ansible:
    """Batched plays against the VMs, with the installed collection and a result-recording callback."""

    def __init__(self, vm_run: VmRun, collections_path: str, workdir: str) -> None:
        self.vm_run = vm_run
        self.collections_path = collections_path
        self.workdir = workdir
        self.count = 0
        self.timings = []
        os.makedirs(workdir, exist_ok=True)
        # Its own ansible.cfg, so that no configuration of the caller's leaks in.
        self.config = os.path.join(workdir, "ansible.cfg")
        with open(self.config, "w") as handle:
            handle.write("[defaults]\nforks = 8\nretry_files_enabled = false\ninterpreter_python = /usr/bin/python3\n"
                         "[ssh_connection]\npipelining = true\nusetty = false\n")

    def env(self, results_file: str) -> dict:
        return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=self.collections_path,
                    ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
                    ANSIBLE_CALLBACKS_ENABLED="ovz_results", OVZ_RESULTS_FILE=results_file,
                    ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                    ANSIBLE_FORKS="8", ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_DISPLAY_SKIPPED_HOSTS="0",
                    ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_CONFIG=self.config)

    def play(self, tasks: list, hosts: str = "ovz_vms", variables: dict = None, module_defaults: dict = None,
             stop_on_error: bool = False, timeout: float = 1800) -> PlayResult:
        """Run ``tasks`` (Ansible task dicts, each with a unique ``name``) in one play.

        Unless ``stop_on_error``, every task gets ``ignore_errors: true``: all steps run, and the
        tests assert on each step's result with a precise message.
        """
        self.count += 1
        names = [task["name"] for task in tasks]
        assert len(names) == len(set(names)), "task names must be unique: %s" % names
        if not stop_on_error:
            tasks = [dict(task, ignore_errors=task.get("ignore_errors", True)) for task in tasks]
        play = {"name": "ovz VM tier %d" % self.count, "hosts": hosts, "gather_facts": False,
                "vars": variables or {}, "tasks": tasks}
        if module_defaults:
            play["module_defaults"] = module_defaults
        playbook = os.path.join(self.workdir, "play-%02d.yml" % self.count)
        results_file = os.path.join(self.workdir, "play-%02d.results.json" % self.count)
        with open(playbook, "w") as handle:
            json.dump([play], handle, indent=1)     # JSON is YAML
        began = time.monotonic()
        try:
            proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", self.vm_run.inventory, playbook],
                                  env=self.env(results_file), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            done = {}
            if os.path.exists(results_file + ".partial"):
                with open(results_file + ".partial", encoding="utf-8") as handle:
                    done = {host: list(tasks_) for host, tasks_ in json.load(handle).items()}
            raise AssertionError("play %d timed out after %d s; tasks done: %s" % (self.count, timeout, done)) from None
        seconds = time.monotonic() - began
        with open(os.path.join(self.workdir, "play-%02d.log" % self.count), "w") as handle:
            handle.write(proc.stdout)
        line = "play %d: %d tasks on %s, %.1f s (rc %d)" % (self.count, len(tasks), hosts, seconds, proc.returncode)
        self.timings.append(line)
        sys.stderr.write("ovz VM tier: %s\n" % line)
        try:
            with open(results_file) as handle:
                results = json.load(handle)
        except (OSError, ValueError):
            raise AssertionError("ansible-playbook recorded no results (rc %d):\n%s"
                                 % (proc.returncode, proc.stdout[-6000:])) from None
        unreachable = [h for h, tasks_ in results.items() if any(r["_status"] == "unreachable" for r in tasks_.values())]
        assert not unreachable, "unreachable: %s\n%s" % (unreachable, proc.stdout[-4000:])
        return PlayResult(proc.returncode, proc.stdout, results)

    def module(self, host: str, module: str, args: dict) -> dict:
        """One module call on one VM (a play of one task); returns its result."""
        result = self.play([{"name": module, module: args}], hosts=host)
        return result.get(host, module)


def peer_of(vms: list, vm: Vm) -> Vm:
    return vms[vm.index % len(vms)]


def copy_to_vm(vm: Vm, local: str, remote: str) -> None:
    """Plain scp over the run's SSH settings (for large files; Ansible's copy is slower)."""
    subprocess.run(["scp", "-q", "-F", vm.run.ssh_config, local, "%s:%s" % (vm.name, remote)], check=True,
                   timeout=600)


def fresh_names(count: int, tag: str = "") -> list:
    """Container names no other test uses: ovzv<6 hex><tag><i>."""
    import uuid
    base = "ovzv%s%s" % (uuid.uuid4().hex[:6], tag)
    return ["%s%d" % (base, i) for i in range(count)]


def destroy_everywhere(ansible: "Ansible", names: list) -> None:
    """Destroy those of these containers that exist on any VM (one play) and assert that it worked.

    A ``raw`` listing first: when the test already removed them, no module runs (each costs
    seconds under TCG).
    """
    if not names:
        return
    tasks = [{"name": "ovz conf", "register": "ovz_conf", "ansible.builtin.raw": "ls /var/lib/ovz/conf || true"}]
    tasks += [{"name": "destroy %s" % name, "when": "'%s.json' in ovz_conf.stdout_lines" % name,
               "ovz.containers.ovz_container": {"name": name, "state": "absent"}} for name in names]
    result = ansible.play(tasks)
    for vm in ansible.vm_run.vms:
        for name in names:
            status = result.get(vm.name, "destroy %s" % name)["_status"]
            assert status in ("ok", "skipped"), "destroy %s on %s: %s" % (name, vm.name, result.get(vm.name, "destroy %s" % name))
