"""Where the project's data lives: toolchain/ and templates/ beside site_scons/ (or AMXFORGE_ROOT)."""

import os
from pathlib import Path


def project_root() -> Path:
    """The amxforge checkout: AMXFORGE_ROOT if set (tests point it at altered copies), else this file's tree."""
    override = os.environ.get("AMXFORGE_ROOT")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


def toolchain_dir() -> Path:
    return project_root() / "toolchain"


def templates_dir() -> Path:
    return project_root() / "templates"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("AMXFORGE_CACHE", os.path.join(base, "amxforge")))
