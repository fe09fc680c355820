"""The installation itself, as every host variant checks it: test functions its smoke suite imports."""

import importlib.metadata
import importlib.util
import os
import sys
from io import StringIO
from pathlib import Path

from django.contrib.staticfiles import finders
from django.core.management import call_command

import flowpilot_analytics


def test_the_app_is_the_installed_wheel_and_the_source_tree_is_not_on_the_path():
    source = Path(os.environ["FLOWPILOT_SOURCE_TREE"]).resolve()
    package = Path(flowpilot_analytics.__file__).resolve()
    assert "site-packages" in package.parts
    assert source != package and source not in package.parents
    on_path = [entry for entry in sys.path if entry and (Path(entry).resolve() == source
                                                         or source in Path(entry).resolve().parents)]
    assert on_path == []
    assert importlib.metadata.version("flowpilot-analytics") == flowpilot_analytics.__version__
    for name in ("config", "tests", "bench", "scripts"):
        assert importlib.util.find_spec(name) is None, f"{name} must not be importable in the host"


def test_the_wheel_brings_its_templates_and_static_files():
    assert finders.find("flowpilot_analytics/admin/escalation_summary.css")
    assert finders.find("flowpilot_analytics/dashboard/dashboard.css")


def test_the_system_checks_pass_and_no_migration_is_missing():
    call_command("check", fail_level="WARNING", stdout=StringIO())
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())
