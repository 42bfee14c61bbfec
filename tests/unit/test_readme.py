"""The README's tables and layout against the data and the tree they describe, so that they cannot go stale: the
classes and their globs (toolchain/classes.toml), the variants (variants.toml), the fork kinds with their markers,
default targets and entry points (forks.toml), every module and site tool, every dependency (setup.cfg)."""

import configparser
import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end if end > 0 else None]


def table_rows(text: str) -> dict:
    """{first cell: the whole row} of the markdown tables in text."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = line
    return rows


def test_the_class_table_names_every_class_and_glob():
    from amxforge.policy import Policy
    rows = table_rows(section("## Classes"))
    policy = Policy()
    assert set(policy.classes.classes) <= set(rows), sorted(set(policy.classes.classes) - set(rows))
    for rule_id, cls, globs in policy.classes.rules:
        for glob, _ in globs:
            assert f"`{glob}`" in rows[cls], f"README's {cls} row lacks {glob} (rule {rule_id})"


def test_the_variant_table_names_every_variant():
    from amxforge.policy import Policy
    firsts = section("## Variants")
    named = set(re.findall(r"^\| ([^|]+) \|", firsts, re.M))
    names = {n.strip("` ") for cell in named for n in cell.split(",")}
    for name in Policy().variants.names:
        assert name in names, name


def test_the_kind_table_is_forks_toml():
    from amxforge.fork.kinds import kinds
    rows = table_rows(section("## Building a fork"))
    for kind in kinds().kinds.values():
        row = rows[kind.name]
        for marker in kind.markers:
            assert f"`{marker}`" in row, (kind.name, marker)
        for target in kind.default_targets:
            assert f"`{target}`" in row, (kind.name, target)
        route = {"backend": "dynamic backend", "link-wrap": "link time"}[kind.kernels["route"]]
        assert route in row or "as above" in row, (kind.name, route)


def test_the_layout_names_every_module_and_site_tool():
    layout = section("## Layout")
    package = ROOT / "site_scons" / "amxforge"
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py" and path.parent != package / "package":
            continue
        assert path.name in layout or f"{path.parent.name}/" in layout and path.name in layout, path
    for path in sorted((package).iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            assert f"{path.name}/" in layout, path
    for tool in sorted((ROOT / "site_scons" / "site_tools").glob("*.py")):
        assert tool.stem in layout, tool
    for toml in sorted((ROOT / "toolchain").glob("*.toml")):
        assert toml.name in layout, toml
    for name in re.findall(r"^\S+\.py", layout, re.M):  # and nothing it names is gone
        assert list(ROOT.glob(f"**/{name}")), name


def test_the_dependency_table_names_every_requirement():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    needs = cfg["options"]["install_requires"].split() + cfg["options.extras_require"]["test"].split()
    rows = table_rows(section("## Dependencies"))
    names = " ".join(rows)
    for req in needs:
        name = re.split(r"[<>=!~]", req)[0]
        assert name in names, name
