# -*- coding: utf-8 -*-
"""Every module is thin: it parses its parameters, calls the engine once, and shapes the answer.

- Each module's ``main`` has at most 15 lines, and no module file more than 120 lines of code
  outside its documentation (DOCUMENTATION, EXAMPLES, RETURN).
- For each module, the engine call its parameters lead to, pinned: the module runs in this
  process (``patch_module_args``) with that engine function replaced by a recorder; what the
  recorder returns or raises comes back as the task's result.

The engine itself is tested on the real kernel elsewhere; here nothing touches the host.
"""

from __future__ import annotations

import ast
import glob
import importlib
import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.ovz.containers.plugins.module_utils._engine.base.errors import InvalidParameter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(glob.glob(os.path.join(REPO, "plugins", "modules", "ovz_*.py")))
PACKAGE = "ansible_collections.ovz.containers.plugins.modules."
DOCS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def code_lines(path):
    """(lines of code outside the documentation strings and comments, lines of ``main``)."""
    with open(path) as handle:
        source = handle.read()
    tree = ast.parse(source)
    docs = set()
    main = 0
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", "") in DOCS for target in node.targets):
            docs.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            main = node.end_lineno - node.lineno + 1
    code = sum(1 for number, line in enumerate(source.splitlines(), 1)
               if number not in docs and line.strip() and not line.strip().startswith("#"))
    return code, main


@pytest.mark.parametrize("path", MODULES, ids=os.path.basename)
def test_the_module_is_thin(path):
    code, main = code_lines(path)
    assert 0 < main <= 15, "%s: main has %d lines" % (path, main)
    assert code <= 120, "%s: %d lines of code outside its documentation" % (path, code)


class Recorder:
    """Stands for one engine function: records each call, answers with ``answer(kwargs)`` or raises."""

    def __init__(self, answer=None, raises=None):
        self.calls = []
        self.answer = answer
        self.raises = raises

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.raises is not None:
            raise self.raises
        return self.answer(args, kwargs) if self.answer else {}


class FakeManager:
    """Stands for ContainerManager: remembers the node it was made for."""

    made = []

    def __init__(self, data_dir, cgroup_parent):
        FakeManager.made.append((data_dir, cgroup_parent))


def run(monkeypatch, capsys, module, args, check=False, diff=False, **replace):
    """Run ``module``'s main with ``args`` and the module's names in ``replace`` swapped; its JSON result."""
    loaded = importlib.import_module(PACKAGE + module)
    FakeManager.made = []
    monkeypatch.setattr(loaded, "ContainerManager", FakeManager, raising=False)
    for name, value in replace.items():
        monkeypatch.setattr(loaded, name, value)
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=diff)):
        with pytest.raises(SystemExit):
            loaded.main()
    return json.loads(capsys.readouterr().out)


NODE = dict(data_dir="/srv/ovz-node", cgroup_parent="ovz-unit")


def test_ovz_checkpoint_asks_the_engine_for_the_state(monkeypatch, capsys):
    def answer(args, kwargs):
        report = args[4]
        report.update(changed=True, state="stopped", dump="/srv/d", diff={"before": {}, "after": {}})
        return report
    reach = Recorder(answer)
    result = run(monkeypatch, capsys, "ovz_checkpoint", dict(NODE, name="ct1", state="checkpointed", dump_dir="/srv/d",
                                                             leave_running=True, ssh_options=["A=b"]),
                 check=True, reach=reach)
    (manager, name, request, check_mode, _report), _kwargs = reach.calls[0]
    assert FakeManager.made == [("/srv/ovz-node", "ovz-unit")] and name == "ct1" and check_mode is True
    assert (request.state, request.dump_dir, request.dumpfile, request.leave_running) == \
        ("checkpointed", "/srv/d", None, True)
    assert (request.tcp_established, request.ssh_options, request.target_data_dir) == (True, ["A=b"], "/var/lib/ovz")
    assert result["changed"] is True and result["state"] == "stopped" and "diff" not in result, result


def test_ovz_checkpoint_failure_names_the_parameter(monkeypatch, capsys):
    result = run(monkeypatch, capsys, "ovz_checkpoint", dict(NODE, name="ct1", state="restored", dumpfile="x"),
                 reach=Recorder(raises=InvalidParameter("must be an absolute path, got 'x'", "dumpfile")))
    assert result["failed"] is True and result["param"] == "dumpfile" and result["changed"] is False, result
    assert result["msg"].startswith("dumpfile: "), result


def test_ovz_exec_passes_every_command_parameter(monkeypatch, capsys):
    run_command = Recorder(lambda args, kwargs: dict(changed=True, rc=0, stdout="hi", cmd=["/bin/sh", "-c", "x"]))
    result = run(monkeypatch, capsys, "ovz_exec", dict(NODE, name="ct1", command="echo hi", creates="/etc/x",
                                                       env={"A": "1"}, timeout=5),
                 run_command=run_command)
    args, kwargs = run_command.calls[0]
    assert args[1] == "ct1" and kwargs == dict(argv=None, command="echo hi", stdin=None, env={"A": "1"}, timeout=5,
                                               output_limit="1M", creates="/etc/x", removes=None, check_mode=False)
    assert result["changed"] is True and result["stdout"] == "hi" and not result.get("failed"), result


def test_ovz_exec_a_failed_command_fails_the_task_with_its_output(monkeypatch, capsys):
    run_command = Recorder(lambda args, kwargs: dict(changed=True, rc=3, stdout="out", failed=True,
                                                     msg="the command exited with status 3"))
    result = run(monkeypatch, capsys, "ovz_exec", dict(NODE, name="ct1", argv=["false"]), run_command=run_command)
    assert result["failed"] is True and result["rc"] == 3 and result["stdout"] == "out", result


def test_ovz_fleet_hands_the_items_and_the_node_to_the_engine(monkeypatch, capsys):
    def answer(args, kwargs):
        kwargs["report"].update(changed=True, summary={"created": 1}, diff={"prepared": "x"})
    converge_fleet = Recorder(answer)
    fleet = importlib.import_module("ansible_collections.ovz.containers.plugins.module_utils._engine.ops.fleet")
    monkeypatch.setattr(fleet, "converge_fleet", converge_fleet)
    result = run(monkeypatch, capsys, "ovz_fleet", dict(NODE, containers=[{"name": "ct1", "template": "t"}],
                                                        node="n1", prune=True, fleet="f"), diff=True)
    args, kwargs = converge_fleet.calls[0]
    assert [item["name"] for item in args[1]] == ["ct1"] and args[1][0]["state"] == "started"
    assert (kwargs["node"], kwargs["prune"], kwargs["fleet"], kwargs["check_mode"]) == ("n1", True, "f", False)
    assert result["changed"] is True and result["diff"] == {"prepared": "x"}, result


def test_ovz_info_lists_every_container_of_the_node(monkeypatch, capsys):
    class Layout:
        @staticmethod
        def names():
            return ["ct1", "ct2"]

    class Manager(FakeManager):
        layout = Layout()

        def facts(self, name, **kwargs):
            return dict(name=name, state="absent", asked=sorted(kwargs))

    result = run(monkeypatch, capsys, "ovz_info", dict(NODE), check=True, ContainerManager=Manager)
    assert [entry["name"] for entry in result["containers"]] == ["ct1", "ct2"], result
    assert result["containers"][0]["asked"] == ["beancounters", "persist", "warn"] and result["changed"] is False


@pytest.mark.parametrize("module, function, extra, expected", [
    ("ovz_limits", "update", dict(ram="512M", cpuunits=2000), dict(ram="512M", cpuunits=2000)),
    ("ovz_quota", "update", dict(diskspace="1G:2G", quotaugidlimit=10),
     dict(diskspace=[1 << 30, 2 << 30], quotaugidlimit=10)),
])
def test_limits_and_quota_hand_their_settings_to_the_engine(monkeypatch, capsys, module, function, extra, expected):
    update = Recorder(raises=InvalidParameter("stop here", "ram"))
    result = run(monkeypatch, capsys, module, dict(NODE, name="ct1", **extra), check=True, **{function: update})
    args, kwargs = update.calls[0]
    assert args[1] == "ct1" and kwargs["dry_run"] is True
    settings = args[2]
    given = settings if isinstance(settings, dict) else vars(settings)
    for key, value in expected.items():
        assert given[key] == value, (key, given)
    assert result["failed"] is True and result["param"] == "ram", result


def test_ovz_container_plans_then_applies_outside_check_mode(monkeypatch, capsys):
    class Plan:
        changed, warnings, wanted, current = True, ["careful"], "running", "absent"

        class tracker:  # noqa: N801 - stands for a DifferenceTracker instance
            @staticmethod
            def diff():
                return {"before": {"state": "absent"}, "after": {"state": "running"}}

    class Manager(FakeManager):
        def facts(self, name):
            return dict(name=name, state="running")

    plan_container, apply_container = Recorder(lambda args, kwargs: Plan), Recorder()
    for check in (True, False):
        result = run(monkeypatch, capsys, "ovz_container", dict(NODE, name="ct1", template="debian-12"), check=check,
                     diff=True, ContainerManager=Manager, plan_container=plan_container,
                     apply_container=apply_container)
        assert result["changed"] is True and result["diff"]["after"] == {"state": "running"}, result
        assert "careful" in json.dumps(result["warnings"]), result
    assert len(plan_container.calls) == 2 and len(apply_container.calls) == 1
    params = plan_container.calls[0][0][2]
    assert (params["template"], params["state"], params["init"]) == ("debian-12", "started", "/sbin/init")


def test_ovz_network_plans_under_the_container_s_lock(monkeypatch, capsys):
    locked = []

    class Manager(FakeManager):
        def exists(self, name):
            return name == "ct1"

        def lock(self, name):
            import contextlib
            locked.append(name)
            return contextlib.nullcontext()

    result = run(monkeypatch, capsys, "ovz_network", dict(NODE, name="ct2", ip_address=["10.213.0.5"]),
                 ContainerManager=Manager)
    assert result["failed"] is True and result["param"] == "name" and "does not exist" in result["msg"], result
    plan_network = Recorder(raises=InvalidParameter("stop here", "ip_address"))
    result = run(monkeypatch, capsys, "ovz_network", dict(NODE, name="ct1", ip_address=["10.213.0.5"]),
                 ContainerManager=Manager, plan_network=plan_network)
    assert locked == ["ct1"] and plan_network.calls[0][0][2]["ip_address"] == ["10.213.0.5"]
    assert result["param"] == "ip_address", result
