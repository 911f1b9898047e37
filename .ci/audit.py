"""Audit the locked dependencies with pip-audit, and say plainly when nothing could be audited.

pip-audit reports "No known vulnerabilities found" even when it could not look a single
package up (no vulnerability database reachable: each package is only "skipped"). This
wrapper reads its JSON report and tells the three cases apart:

    exit 1  known vulnerabilities, each named with its fix version
    exit 0  every package audited, none vulnerable
    exit 0  "not audited: no vulnerability database reachable" (exit 1 with MLOPS_AUDIT_REQUIRED=1)

Usage: python .ci/audit.py REQUIREMENTS.txt
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404: runs pip-audit, a fixed command
import sys
import tempfile
from pathlib import Path


def summarise(report: dict, required: bool = False) -> tuple[int, str]:
    """The exit code and the message for a pip-audit JSON report."""
    packages = report.get("dependencies", [])
    vulnerable = [p for p in packages if p.get("vulns")]
    skipped = [p for p in packages if "skip_reason" in p]
    audited = len(packages) - len(skipped)
    lines = []
    for package in vulnerable:
        for vuln in package["vulns"]:
            fix = ", ".join(vuln.get("fix_versions") or []) or "no fixed release yet"
            lines.append(f"VULNERABLE {package['name']} {package.get('version', '?')}: {vuln['id']} (fixed in {fix})")
    if vulnerable:
        lines.append(f"{len(vulnerable)} of {len(packages)} packages have known vulnerabilities: upgrade them in uv.lock.")
        return 1, "\n".join(lines)
    if audited == 0:
        message = (
            f"not audited: no vulnerability database reachable ({len(skipped)} of {len(packages)} packages "
            "could not be looked up). Run `make check` where PyPI's JSON API or api.osv.dev answers."
        )
        return (1 if required else 0), message
    message = f"no known vulnerabilities in {audited} audited packages"
    if skipped:
        names = ", ".join(p["name"] for p in skipped[:10])
        message += f"; NOT audited: {len(skipped)} packages ({names}{', …' if len(skipped) > 10 else ''})"
        return (1 if required else 0), message
    return 0, message


def main(requirements: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "audit.json"
        command = [sys.executable, "-m", "pip_audit", "-r", requirements, "--no-deps", "--disable-pip"]
        command += ["--progress-spinner", "off", "-f", "json", "-o", str(output)]
        subprocess.run(command, check=False, capture_output=True, timeout=600)  # nosec B603: fixed command
        if not output.is_file():
            print("not audited: pip-audit wrote no report (no vulnerability database reachable?)")
            return 1 if os.environ.get("MLOPS_AUDIT_REQUIRED") == "1" else 0
        code, message = summarise(json.loads(output.read_text()), os.environ.get("MLOPS_AUDIT_REQUIRED") == "1")
    print(f"pip-audit: {message}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
