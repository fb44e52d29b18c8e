"""The wheel holds every package: pyproject.toml lists them by hand, and an editable
install (what the tests run on) would hide one left out."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _packages_under(name: str, folder: Path) -> set[str]:
    return {
        ".".join([name, *init.parent.relative_to(folder).parts])
        for init in folder.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_every_package_is_in_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found: set[str] = set()
    for name, folder in setuptools["package-dir"].items():
        found |= _packages_under(name, ROOT / folder)
    assert found == listed
