"""
Checks a built wheel of flowpilot-analytics: what it holds and what it declares.

    python scripts/check_wheel.py dist/flowpilot_analytics-0.1.0-py3-none-any.whl [--source .]

Prints each problem and exits 1 when there is any (CI runs it through
scripts/host_smoke.py). The wheel must hold exactly the files of the source
tree's ``flowpilot_analytics/`` (Python modules, migrations, templates, static
files; no ``__pycache__``) plus its ``.dist-info``, and nothing else: no
``config``, ``tests``, ``bench`` or ``scripts``. Its metadata must give the version
of ``flowpilot_analytics.__version__``, the runtime dependencies below with version
ranges, and the test and demo dependencies only behind extras. Standard library only.
"""

import argparse
import ast
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

PACKAGE = "flowpilot_analytics"
DISTRIBUTION = "flowpilot-analytics"
# What the app imports at run time: declared unconditionally, each with a lower and an upper bound.
RUNTIME_REQUIREMENTS = {"django", "djangorestframework", "drf-spectacular"}
EXTRAS = {"postgresql", "demo", "test", "dev"}
# Never a runtime dependency: only the demo, the tests or a database driver the host chooses need them.
EXTRA_ONLY = {"factory-boy", "pytest", "pytest-django", "hypothesis", "numpy", "selenium", "schemathesis",
              "dj-database-url", "drf-spectacular-sidecar", "gunicorn", "psycopg", "redis"}
# Kinds of file the wheel must carry beside the Python modules.
MUST_HOLD = {
    "migrations": f"{PACKAGE}/migrations/0001_initial.py",
    "templates": f"{PACKAGE}/templates/admin/{PACKAGE}/escalation_summary.html",
    "static files": f"{PACKAGE}/static/{PACKAGE}/admin/escalation_summary.css",
    "template tags": f"{PACKAGE}/templatetags/flowpilot_admin.py",
    "management commands": f"{PACKAGE}/management/commands/escalation_report.py",
    "URLs": f"{PACKAGE}/urls.py",
}


def source_version(source):
    """``__version__`` of the source tree, read without importing it."""
    tree = ast.parse((source / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [target.id for target in node.targets] == ["__version__"]:
            return ast.literal_eval(node.value)
    raise ValueError(f"no __version__ in {source / PACKAGE / '__init__.py'}")


def source_files(source):
    """The package's files in the source tree, as wheel paths."""
    root = source / PACKAGE
    return {
        PurePosixPath(PACKAGE, *path.relative_to(root).parts).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}
    }


def requirement_name(requirement):
    return re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def wheel_problems(wheel, *, source):
    """Everything wrong with ``wheel`` (a path), as sentences; empty when it is right."""
    problems = []
    version = source_version(source)
    expected_name = f"{PACKAGE}-{version}-py3-none-any.whl"
    if Path(wheel).name != expected_name:
        problems.append(f"the wheel is named {Path(wheel).name}, expected {expected_name}")
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if not name.endswith("/")]
        dist_info = f"{PACKAGE}-{version}.dist-info"
        metadata = archive.read(f"{dist_info}/METADATA").decode() if f"{dist_info}/METADATA" in names else ""
        top_level = (archive.read(f"{dist_info}/top_level.txt").decode().split()
                     if f"{dist_info}/top_level.txt" in names else [PACKAGE])
    if not metadata:
        problems.append(f"no {dist_info}/METADATA in the wheel")

    tops = sorted({name.split("/", 1)[0] for name in names} - {PACKAGE, dist_info})
    if tops:
        problems.append(f"the wheel holds more than {PACKAGE}/ and its dist-info: {', '.join(tops)}")
    if top_level != [PACKAGE]:
        problems.append(f"top_level.txt lists {top_level}, expected only {PACKAGE}")
    packaged = {name for name in names if name.startswith(f"{PACKAGE}/")}
    missing = sorted(source_files(source) - packaged)
    if missing:
        problems.append(f"files of the source tree missing from the wheel: {', '.join(missing)}")
    extra = sorted(packaged - source_files(source))
    if extra:
        problems.append(f"files in the wheel that the source tree does not have: {', '.join(extra)}")
    for kind, path in MUST_HOLD.items():
        if path not in packaged:
            problems.append(f"no {kind} in the wheel ({path})")

    fields = Parser().parsestr(metadata)
    if metadata and fields["Name"] != DISTRIBUTION:
        problems.append(f"Name is {fields['Name']!r}, expected {DISTRIBUTION!r}")
    if metadata and fields["Version"] != version:
        problems.append(f"Version is {fields['Version']!r}, but {PACKAGE}.__version__ is {version!r}")
    requires = fields.get_all("Requires-Dist") or []
    unconditional = {requirement_name(req): req for req in requires if "extra ==" not in req}
    if set(unconditional) != RUNTIME_REQUIREMENTS:
        problems.append(
            f"runtime Requires-Dist names {sorted(unconditional)}, expected {sorted(RUNTIME_REQUIREMENTS)}"
        )
    for name, requirement in unconditional.items():
        if not (">=" in requirement and "<" in requirement.replace("<=", "")):
            problems.append(f"Requires-Dist {requirement!r} has no version range (>=lower,<upper)")
    leaked = sorted(EXTRA_ONLY & set(unconditional))
    if leaked:
        problems.append(f"demo, test or driver dependencies required at run time: {', '.join(leaked)}")
    provided = set(fields.get_all("Provides-Extra") or [])
    if metadata and not EXTRAS <= provided:
        problems.append(f"extras {sorted(EXTRAS - provided)} are not provided")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the source tree the wheel was built from (default: this repository)")
    args = parser.parse_args(argv)
    problems = wheel_problems(args.wheel, source=args.source)
    for problem in problems:
        print(f"wheel check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"wheel check: {Path(args.wheel).name} holds only {PACKAGE}/ (modules, migrations, templates, "
          "static files) and its dist-info, and declares its dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
