"""The package a host installs: what the runtime imports, what the wheel must hold, the README's two lines.

The real wheel is built, checked and installed into a fresh host by
``scripts/host_smoke.py`` (``make host-smoke``, run by CI on both databases); here
the check it applies is shown to catch each regression, without building anything.
"""

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import flowpilot_analytics
from scripts.check_wheel import RUNTIME_REQUIREMENTS, source_files, wheel_problems

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "examples" / "host"
VERSION = flowpilot_analytics.__version__

# Import names of what only the demo, the tests or a database driver bring (pyproject's extras).
EXTRAS_ONLY_MODULES = [
    "factory", "hypothesis", "numpy", "selenium", "schemathesis", "pytest", "pytest_django",
    "dj_database_url", "drf_spectacular_sidecar", "gunicorn", "psycopg", "redis",
]

RUNTIME_PROBE = """
import importlib, importlib.abc, json, pkgutil, sys, tempfile
from pathlib import Path

BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())

import django
from django.conf import settings
settings.configure(
    SECRET_KEY="packaging-probe",
    ALLOWED_HOSTS=["testserver"],
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
        "rest_framework", "flowpilot_analytics",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[{
        "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
        "OPTIONS": {"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]},
    }],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    ROOT_URLCONF="probe_urls",
    STATIC_URL="static/",
    USE_TZ=True,
    SILENCED_SYSTEM_CHECKS=["models.W040"],
)
urls = Path(tempfile.mkdtemp()) / "probe_urls.py"
urls.write_text(
    "from django.contrib import admin\\n"
    "from django.urls import include, path\\n"
    "urlpatterns = [path('admin/', admin.site.urls), path('', include('flowpilot_analytics.urls'))]\\n"
)
sys.path.insert(0, str(urls.parent))
django.setup()

import flowpilot_analytics
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

result = {"imported": []}
for module in pkgutil.walk_packages(flowpilot_analytics.__path__, "flowpilot_analytics."):
    if module.name not in {"flowpilot_analytics.demo", "flowpilot_analytics.factories"}:
        importlib.import_module(module.name)
        result["imported"].append(module.name)
call_command("migrate", verbosity=0)
call_command("check", fail_level="WARNING")
call_command("escalation_report", "--format", "json")
client = Client()
client.force_login(get_user_model().objects.create_superuser("probe"))
result["admin_index"] = client.get("/admin/").status_code
result["widget_page"] = client.get("/admin/flowpilot_analytics/escalationsummarypage/").status_code
result["api_anonymous"] = Client().get("/api/v1/analytics/flowpilot/escalations").status_code
try:
    call_command("seed_demo")
except CommandError as exc:
    result["seed_demo"] = str(exc)
try:
    import flowpilot_analytics.factories
except ImportError as exc:
    result["factories"] = str(exc)
result["leaked"] = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
print(json.dumps(result))
"""


def test_the_app_runs_without_the_demo_and_test_extras(tmp_path):
    """Every module, the admin, the URLs and every command but seed_demo, with the extras' modules blocked."""
    env = {name: value for name, value in os.environ.items()
           if name not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}}
    completed = subprocess.run(
        [sys.executable, "-c", RUNTIME_PROBE, ",".join(EXTRAS_ONLY_MODULES)],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = __import__("json").loads(completed.stdout.strip().splitlines()[-1])

    assert {"flowpilot_analytics.admin", "flowpilot_analytics.urls", "flowpilot_analytics.api.views",
            "flowpilot_analytics.management.commands.seed_demo"} <= set(result["imported"])
    assert (result["admin_index"], result["widget_page"], result["api_anonymous"]) == (200, 200, 403)
    assert "pip install 'flowpilot-analytics[demo]'" in result["seed_demo"]
    assert "pip install 'flowpilot-analytics[demo]'" in result["factories"]
    assert result["leaked"] == []


def test_the_version_lives_in_the_package_and_the_metadata_follows_it():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert importlib.metadata.version("flowpilot-analytics") == VERSION
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]


def test_pyproject_declares_the_runtime_and_keeps_the_rest_in_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in project["dependencies"]}
    assert names == RUNTIME_REQUIREMENTS
    extras = project["optional-dependencies"]
    assert any(requirement.startswith("factory-boy") for requirement in extras["demo"])
    assert any(requirement.startswith("factory-boy") for requirement in extras["test"])
    assert any(requirement.startswith("psycopg") for requirement in extras["postgresql"])


# --- The wheel check catches each regression ---------------------------------------------


def metadata(*, version=VERSION, requires=None):
    requires = requires if requires is not None else [
        "Django<6.0,>=5.2", "djangorestframework<4.0,>=3.16", "drf-spectacular<1.0,>=0.28",
        'psycopg[binary]<4.0,>=3.2; extra == "postgresql"', 'factory-boy<4.0,>=3.3; extra == "demo"',
    ]
    lines = ["Metadata-Version: 2.4", "Name: flowpilot-analytics", f"Version: {version}"]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    lines += [f"Provides-Extra: {extra}" for extra in ("postgresql", "demo", "test", "dev")]
    return "\n".join(lines) + "\n"


def make_wheel(path, *, files=None, extra_files=(), version=VERSION, **metadata_options):
    files = sorted(source_files(ROOT)) if files is None else files
    wheel = path / f"flowpilot_analytics-{version}-py3-none-any.whl"
    dist_info = f"flowpilot_analytics-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in [*files, *extra_files]:
            archive.writestr(name, "")
        archive.writestr(f"{dist_info}/METADATA", metadata(version=version, **metadata_options))
        archive.writestr(f"{dist_info}/top_level.txt", "flowpilot_analytics\n")
    return wheel


def test_a_wheel_like_the_source_tree_passes(tmp_path):
    assert wheel_problems(make_wheel(tmp_path), source=ROOT) == []


def test_other_top_level_packages_are_refused(tmp_path):
    wheel = make_wheel(tmp_path, extra_files=["config/settings.py", "tests/conftest.py", "bench/data.py"])
    [problem] = wheel_problems(wheel, source=ROOT)
    assert problem.endswith("holds more than flowpilot_analytics/ and its dist-info: bench, config, tests")


def test_missing_templates_static_files_or_migrations_are_refused(tmp_path):
    files = [name for name in source_files(ROOT) if "/templates/" not in name and "/static/" not in name
             and "/migrations/0004" not in name]
    problems = "\n".join(wheel_problems(make_wheel(tmp_path, files=files), source=ROOT))
    assert "missing from the wheel" in problems
    assert "escalation_summary_page.html" in problems and "0004_escalation_summary_page.py" in problems
    assert "no templates in the wheel" in problems and "no static files in the wheel" in problems


def test_dependencies_without_ranges_or_leaking_from_extras_are_refused(tmp_path):
    requires = ["Django", "djangorestframework<4.0,>=3.16", "drf-spectacular<1.0,>=0.28", "factory-boy>=3.3"]
    wheel = make_wheel(tmp_path, requires=requires)
    problems = wheel_problems(wheel, source=ROOT)
    assert "Requires-Dist 'Django' has no version range (>=lower,<upper)" in problems
    assert "demo, test or driver dependencies required at run time: factory-boy" in problems


def test_a_version_other_than_the_packages_is_refused(tmp_path):
    problems = wheel_problems(make_wheel(tmp_path, version="0.0.0"), source=ROOT)
    assert any("expected flowpilot_analytics-" in problem for problem in problems)


# --- The example host installs the app exactly as the README says ----------------------------


def readme_install_lines():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install into your project"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_example_host_adds_exactly_the_readmes_two_lines():
    installed_apps, url_import, urls = readme_install_lines()
    assert installed_apps.startswith("INSTALLED_APPS += ") and urls.startswith("urlpatterns += ")
    # startproject's urls.py imports only path: the README says to import include too.
    assert url_import == "from django.urls import include, path"
    settings = (HOST / "host" / "settings.py").read_text()
    urlconf = (HOST / "host" / "urls.py").read_text()
    assert installed_apps in settings.splitlines()
    assert url_import in urlconf.splitlines() and urls in urlconf.splitlines()
    assert "flowpilot" not in settings.replace(installed_apps, "").lower()
    assert "REST_FRAMEWORK" not in settings, "the host keeps DRF's defaults"


def test_the_repositorys_suite_does_not_collect_the_hosts():
    config = (ROOT / "setup.cfg").read_text()
    assert re.search(r"^testpaths = tests$", config, re.M)
    assert (HOST / "pytest.ini").read_text().count("DJANGO_SETTINGS_MODULE = host.settings") == 1


@pytest.mark.parametrize("path", ["scripts/host_smoke.py", "scripts/check_wheel.py"])
def test_the_packaging_scripts_need_only_the_standard_library(path):
    source = textwrap.dedent((ROOT / path).read_text())
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, re.M))
    assert imported <= set(sys.stdlib_module_names) | {"check_wheel"}, imported


MONOLITH = ROOT / "examples" / "host_models"
CONTRACT_MODEL_SETTINGS = {
    "FLOWPILOT_ANALYTICS_ACCOUNT_MODEL", "FLOWPILOT_ANALYTICS_STEP_MODEL", "FLOWPILOT_ANALYTICS_HANDOFF_MODEL",
}


def test_the_monolith_with_its_own_models_uses_only_the_contracts_settings():
    """examples/host_models: the README's two lines, the three model settings and FIELDS, ACCESS_POLICY, RLS."""
    installed_apps, _, urls = readme_install_lines()
    settings = (MONOLITH / "monolith" / "settings.py").read_text()
    assert installed_apps in settings.splitlines()
    assert urls in (MONOLITH / "monolith" / "urls.py").read_text().splitlines()
    assigned = set(re.findall(r"^(FLOWPILOT_\w+)\s*=", settings, re.M))
    assert assigned == CONTRACT_MODEL_SETTINGS | {"FLOWPILOT_ANALYTICS"}
    keys = set(re.findall(r"^    '([A-Z_]+)':", settings[settings.index("FLOWPILOT_ANALYTICS = {"):], re.M))
    assert keys == {"FIELDS", "ACCESS_POLICY", "RLS"}
    assert "REST_FRAMEWORK" not in settings, "the host keeps DRF's defaults"
    assert (MONOLITH / "pytest.ini").read_text().count("DJANGO_SETTINGS_MODULE = monolith.settings") == 1
