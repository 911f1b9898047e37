"""`make check`'s dependency audit tells "no vulnerabilities" from "nothing could be audited"."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _audit():
    spec = importlib.util.spec_from_file_location("ci_audit", ROOT / ".ci" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The shape pip-audit 2.x writes with `-f json` (pip_audit/_format/json.py).
SKIPPED = {"name": "aiohttp", "skip_reason": "Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)"}
CLEAN = {"name": "six", "version": "1.16.0", "vulns": []}
VULNERABLE = {
    "name": "requests",
    "version": "2.0.0",
    "vulns": [{"id": "PYSEC-2014-13", "fix_versions": ["2.3.0"], "aliases": [], "description": "…"}],
}


def test_nothing_audited_is_said_plainly_and_never_as_no_vulnerabilities():
    code, message = _audit().summarise({"dependencies": [SKIPPED, dict(SKIPPED, name="attrs")], "fixes": []})
    assert code == 0
    assert message.startswith("not audited: no vulnerability database reachable (2 of 2 packages")
    assert "no known vulnerabilities" not in message
    assert _audit().summarise({"dependencies": [SKIPPED]}, required=True)[0] == 1


def test_a_known_vulnerability_fails_and_names_the_fix():
    code, message = _audit().summarise({"dependencies": [CLEAN, VULNERABLE, SKIPPED]})
    assert code == 1
    assert "VULNERABLE requests 2.0.0: PYSEC-2014-13 (fixed in 2.3.0)" in message


def test_a_partial_audit_names_what_was_not_audited():
    code, message = _audit().summarise({"dependencies": [CLEAN, SKIPPED]})
    assert code == 0
    assert message.startswith("no known vulnerabilities in 1 audited packages; NOT audited: 1 packages (aiohttp)")


def test_the_audit_runs_pip_audit_for_real_and_reports_one_of_the_three_outcomes(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "audit.py"), str(requirements)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.startswith("pip-audit: ")
    said = result.stdout
    assert any(outcome in said for outcome in ("not audited", "no known vulnerabilities in 1 audited", "VULNERABLE")), said
