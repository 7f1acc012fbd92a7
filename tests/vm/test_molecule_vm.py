# -*- coding: utf-8 -*-
"""The roles' Molecule scenarios on the VM platform (issue 8), run on this tier's own VMs.

``molecule test -s vm`` (the platform itself), ``-s ovz_host`` and the other roles' scenarios on
the VMs, ``ovz_template_vm``, ``ovz_fleet_vm``, ``ovz_evacuate_vm`` (create and destroy from
``extensions/molecule/vm/``; converge and verify shared with the roles' local scenarios) with
``OVZ_VM_ID`` naming this tier's run and ``OVZ_VM_REUSE=1``: create reads the run's VMs instead
of booting new ones, destroy leaves them (the tier takes them down). Checked as for the local
scenarios (tests/support/molecule_output.py): exit 0, an idempotence step with zero changed tasks, verify
(testinfra: packages and CRIU, kernel settings, the slice, ovzctl, onboot after a simulated crash)
successful. The scenario's containers are removed afterwards, so that later tests (onboot's
reboot) do not meet them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support.molecule_output import assert_molecule_test_passed
from vmlib import BIN, REPO, destroy_everywhere

# Scenarios on the VM platform (their create playbook is ../vm/create.yml) and the containers they make.
VM_SCENARIOS = {"vm": ["ovzmol"], "ovz_host": ["ovzonboot", "ovzmanual"], "ovz_template_vm": ["ovzmoltpl"],
                "ovz_fleet_vm": ["ovzmolweb1", "ovzmolweb2", "ovzmoldb1", "ovzmolspare"],
                "ovz_evacuate_vm": ["ovzev1", "ovzev2"]}
# What a scenario keeps on the controller (ovz_template's build cache).
CONTROLLER_DIRS = {"ovz_template_vm": "/var/tmp/ovz-tests-molecule-ovz-template-vm"}


@pytest.mark.parametrize("scenario", sorted(VM_SCENARIOS))
def test_role_scenario_on_the_vms(vm_run, ansible, scenario):
    env = dict(os.environ, OVZ_VM_ID=vm_run.run_id, OVZ_VM_REUSE="1", PATH=BIN + os.pathsep + os.environ["PATH"],
               PY_COLORS="0", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", MOLECULE_NO_LOG="false")
    try:
        proc = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", scenario], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=1500, check=False)
        assert_molecule_test_passed(proc.returncode, proc.stdout)
    finally:
        destroy_everywhere(ansible, VM_SCENARIOS[scenario])
        if scenario in CONTROLLER_DIRS:
            shutil.rmtree(CONTROLLER_DIRS[scenario], ignore_errors=True)
