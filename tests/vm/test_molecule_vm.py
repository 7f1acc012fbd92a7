# -*- coding: utf-8 -*-
"""The roles' Molecule scenarios on the VM platform (issue 8), run on this tier's own VMs.

``molecule test -s vm`` (the platform itself) and ``-s ovz_host`` (the role; create and destroy
from ``extensions/molecule/vm/``) with
``OVZ_VM_ID`` naming this tier's run and ``OVZ_VM_REUSE=1``: create reads the run's VMs instead
of booting new ones, destroy leaves them (the tier takes them down). Checked as for the local
scenarios (tests/molecule_output.py): exit 0, an idempotence step with zero changed tasks, verify
(testinfra: packages and CRIU, kernel settings, the slice, ovzctl, onboot after a simulated crash)
successful. The scenario's containers are removed afterwards, so that later tests (onboot's
reboot) do not meet them.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from molecule_output import assert_molecule_test_passed
from vmlib import BIN, REPO, destroy_everywhere

# Scenarios on the VM platform (their create playbook is ../vm/create.yml) and the containers they make.
VM_SCENARIOS = {"vm": ["ovzmol"], "ovz_host": ["ovzonboot", "ovzmanual"]}


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
