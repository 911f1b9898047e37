"""``mlops report``: the reports a run wrote, found on disk, newest first; real reports, no browser opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasets import build

from mlops.cli import cli
from mlops.contract import check_with_report, draft_contract, write_contract
from mlops.monitoring import compute_drift
from mlops.reporting import find_reports

REPO = Path(__file__).resolve().parents[1]
CARD = "# {name} v{version}\n\nTask: classification; target `cultivar`.\n"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder as the flows leave it: a validation report, a drift report, two model cards."""
    state = tmp_path_factory.mktemp("state")
    reports = state / "reports"
    train, current, spec = build("wines")
    contract = write_contract(draft_contract(train, spec.target, spec.name), state / "wines.yaml")
    _, validation = check_with_report(train, contract, scope="training", source="wines.csv",
                                      report_path=reports / "validation-training-local.html")
    drift = compute_drift(train, current, threshold=0.3, columns=["alcohol", "ash"],
                          report_path=reports / "drift-20260101T000000.html")
    (reports / "drift-20260101T000000.json").write_text("{}\n")  # the summary beside it: not a report to open
    cards = []
    for version, run in (("3", "run-a"), ("4", "run-b")):
        card = state / "mlartifacts" / "1" / run / "artifacts" / "model_card.md"
        card.parent.mkdir(parents=True)
        card.write_text(CARD.format(name="wines-classifier", version=version), encoding="utf-8")
        cards.append(card)
    # oldest to newest: v3's card, the validation report, v4's card, the drift report
    for age, path in enumerate(reversed([cards[0], validation, cards[1], Path(str(drift.report_path))])):
        os.utime(path, (1_700_000_000 - 60 * age,) * 2)
    return state


def _report(state: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--state-dir", str(state), "report", *args])
    return result.exit_code, result.output


def test_find_reports__kinds_and_versions_newest_first(state: Path) -> None:
    found = find_reports(state / "reports", state / "mlartifacts")

    assert [(report.kind, report.version) for report in found] == [
        ("drift", None), ("model card", "4"), ("validation", None), ("model card", "3"),
    ]
    assert all(report.path.is_file() for report in found)


def test_report__lists_the_files_with_paths_newest_first(state: Path) -> None:
    code, output = _report(state)

    assert code == 0, output
    names = ["drift-20260101T000000.html", "v4", "validation-training-local.html", "v3"]
    positions = [output.index(name) for name in names]
    assert positions == sorted(positions)
    assert str(state / "reports") in output.replace("\n", "")
    assert ".json" not in output


def test_report__version_shows_that_model_card(state: Path) -> None:
    code, output = _report(state, "--version", "3")

    assert code == 0, output
    assert "# wines-classifier v3" in output and "run-a" in output.replace("\n", "")


def test_report__unknown_version_is_a_clean_error(state: Path) -> None:
    code, output = _report(state, "--version", "9")

    assert code == 2
    assert "No model card of version 9" in output


def test_report__empty_state_folder_says_what_writes_reports(tmp_path: Path) -> None:
    code, output = _report(tmp_path)

    assert code == 0 and "No reports yet" in output


def test_report__listing_imports_neither_mlflow_nor_pandas(state: Path) -> None:
    script = (
        "import sys; from mlops.cli import cli; "
        f"cli.main(['--state-dir', {str(state)!r}, 'report'], standalone_mode=False); "
        "print(sorted(name for name in ('mlflow', 'pandas', 'evidently') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
