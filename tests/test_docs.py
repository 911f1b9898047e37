"""The docs: the README is a front door, every link lands, the generated references are current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
GENERATED = ("docs/api",)  # written by `make docs`, not committed


def test_readme__is_a_front_door_under_200_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200
    text = "\n".join(lines)
    assert text.index("make demo") < text.index("## The command line"), "the two commands come first"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_docs__every_relative_link_lands_on_a_file(page):
    text = page.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not followed (no network)
        resolved = (page.parent / target).resolve()
        if any(resolved.is_relative_to(REPO / part) for part in GENERATED):
            continue
        if not resolved.exists():
            missing.append(target)
    assert not missing, f"{page.name}: {missing}"


def test_docs__no_figure_outside_the_benchmark_results():
    """Measured figures live in benchmarks/results/ only; pages link them."""
    figure = re.compile(r"\b\d+(?:\.\d+)?\s?(?:× (?:faster|slower)|x faster|ms\b|s to recover|rows/s|req/s|requests/s)")
    for page in PAGES:
        prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        assert not figure.findall(prose), f"{page.name}: {figure.findall(prose)[:3]}"


def test_docs__generated_reference_is_current_and_docstring_references_resolve():
    result = subprocess.run([sys.executable, str(REPO / "docs" / "build.py"), "--check"], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr


def test_docs__the_api_reference_renders_every_public_module(tmp_path):
    sys.path.insert(0, str(REPO / "docs"))
    try:
        import build
    finally:
        sys.path.remove(str(REPO / "docs"))
    build.build_api(tmp_path)
    for module in build.API_MODULES:
        page = tmp_path.joinpath(*module.split(".")).with_suffix(".html")
        assert page.is_file(), module
    tasks_page = (tmp_path / "mlops" / "tasks.html").read_text(encoding="utf-8")
    assert "train_candidates" in tasks_page and "register_model" in tasks_page
