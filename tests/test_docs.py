"""docs/configuration.md names exactly the environment variables the code reads; doc links resolve.

The variables are found by parsing the source with `ast` (calls of the strict readers in
iops/lib/env.py, `os.environ.get`, `os.getenv`, `os.environ[...]`), the documented ones by reading the
first column of the tables in docs/configuration.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "iops" / "settings.py"
CONFIGURATION = ROOT / "docs" / "configuration.md"
APPS = ("iops", "metrics", "alerts", "insights", "pipeline", "ingest", "simulator", "dashboard")
# The Markdown a reader follows links through (relative links must name a file or folder that exists).
DOC_PAGES = ("README.md", "ARCHITECTURE.md", "CHANGELOG.md", "docs/*.md")
ENV_READERS = {"env_str", "env_bool", "env_int", "env_float", "env_list", "env_choice", "getenv"}


def _is_os_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _constant_name(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def env_reads(source: str) -> set[str]:
    """Names of the environment variables a module reads (writes such as setdefault are not reads)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            environ_get = called == "get" and isinstance(func, ast.Attribute) and _is_os_environ(func.value)
            if called in ENV_READERS or environ_get:
                name = _constant_name(node.args[0])
                if name:
                    names.add(name)
        elif (
            isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value)
        ):
            name = _constant_name(node.slice)
            if name:
                names.add(name)
    return names


def code_variables() -> dict[str, list[str]]:
    """variable -> the project files that read it (settings first; app code, not tests or migrations)."""
    files = [SETTINGS] + sorted(
        p
        for app in APPS
        for p in (ROOT / app).rglob("*.py")
        if p != SETTINGS and "tests" not in p.parts and "migrations" not in p.parts
    )
    found: dict[str, list[str]] = {}
    for path in files:
        for name in env_reads(path.read_text()):
            found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def documented_variables() -> set[str]:
    """Variables named in the first column of the table rows of docs/configuration.md."""
    names: set[str] = set()
    for line in CONFIGURATION.read_text().splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def relative_links(text: str) -> set[str]:
    """Targets of Markdown links and images that point inside the repository (no scheme, no anchor-only)."""
    targets = set()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        targets.add(target.split("#", 1)[0])
    return targets


def test_env_reads_finds_every_way_of_reading_the_environment():
    source = """
import os
from iops.lib.env import env_int
A = env_int("ONE", 3, minimum=1)
B = os.environ.get("TWO")
C = os.getenv("THREE", "x")
D = os.environ["FOUR"]
os.environ.setdefault("NOT_A_READ", "iops.settings")
os.environ["NOT_A_READ_EITHER"] = "1"
E = settings.get("NOT_ENV")
"""
    assert env_reads(source) == {"ONE", "TWO", "THREE", "FOUR"}


def test_settings_read_many_variables():
    # Guards the parser against silently finding nothing (which would make the tests below vacuous).
    assert len(env_reads(SETTINGS.read_text())) > 50


def test_every_variable_the_code_reads_is_in_the_configuration_table():
    documented = documented_variables()
    missing = {name: files for name, files in code_variables().items() if name not in documented}
    assert not missing, f"add these to the tables of docs/configuration.md: {missing}"


def test_configuration_table_names_only_variables_the_code_reads():
    unknown = sorted(documented_variables() - set(code_variables()))
    assert not unknown, f"docs/configuration.md documents variables no code reads: {unknown}"


def test_relative_links_finds_repository_links_only():
    text = "[a](docs/x.md) ![b](docs/s.png) [c](https://e.com/y) [d](#top) [e](bench/RESULTS.md#ingest)"
    assert relative_links(text) == {"docs/x.md", "docs/s.png", "bench/RESULTS.md"}


def test_every_relative_link_in_the_docs_points_to_an_existing_file():
    pages = [p for pattern in DOC_PAGES for p in sorted(ROOT.glob(pattern))]
    assert len(pages) >= 4, pages
    broken = {
        str(page.relative_to(ROOT)): sorted(
            t for t in relative_links(page.read_text()) if not (page.parent / t).exists()
        )
        for page in pages
    }
    broken = {page: targets for page, targets in broken.items() if targets}
    assert not broken, f"links to files that do not exist: {broken}"


def test_env_example_names_only_documented_variables():
    documented = documented_variables()
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=", line.strip())
        if m:
            names.add(m.group(1))
    assert names, ".env.example has no variables"
    assert not names - documented, f".env.example names undocumented variables: {sorted(names - documented)}"
