# -*- coding: utf-8 -*-
"""The ``name`` option is declared once (_ansible/argspec.py) and every module takes it from there."""

from __future__ import annotations

import glob
import importlib
import os

from ansible_collections.ovz.containers.plugins.module_utils._ansible.argspec import (
    NAME_ARGUMENT_SPEC, NAMES_ARGUMENT_SPEC)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "ansible_collections.ovz.containers.plugins.modules."


def _spec(module_name):
    return importlib.import_module(PACKAGE + module_name).ARGUMENT_SPEC


def test_the_name_option_is_the_shared_one_in_every_module():
    modules = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "plugins", "modules", "ovz_*.py")))
    for module_name in modules:
        spec = _spec(module_name)
        if module_name == "ovz_fleet":
            assert "name" not in spec
            assert spec["containers"]["options"]["name"] is NAME_ARGUMENT_SPEC["name"]
        elif module_name == "ovz_info":
            assert spec["name"] is NAMES_ARGUMENT_SPEC["name"]
        else:
            assert spec["name"] is NAME_ARGUMENT_SPEC["name"], module_name


def test_the_shared_name_options_read_as_before():
    assert NAME_ARGUMENT_SPEC == {"name": {"type": "str", "required": True, "aliases": ["ctid"]}}
    assert NAMES_ARGUMENT_SPEC == {"name": {"type": "list", "elements": "str", "aliases": ["ctid"]}}
