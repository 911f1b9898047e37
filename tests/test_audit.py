"""The audit log against real operations: a real MLflow store, the real gate, promote and
rollback, the schedule deployments, a retrain decision, and the `mlops audit` command.
(A real deploy and its automatic roll-back are audited in tests/test_deployment.py, a real
retrain in tests/test_monitoring_flow.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops import audit, tracking
from mlops.data import load_table
from mlops.training import DataSplit, split_holdout, train_model

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).parent / "mlops"
FIELDS = {"at", "by", "kind", "model", "version", "run_id", "reason"}


@pytest.fixture
def split(settings) -> DataSplit:
    return split_holdout(load_table(settings.data.training), "target", settings.model.test_size, settings.model.seed)


def _train_and_gate(settings, split, rows: int | None = None):
    """One training run through the real gate (``rows``: fit on the first N rows only, a weaker model)."""
    data = split
    if rows is not None:
        data = DataSplit(split.x_train.head(rows), split.y_train.head(rows), split.x_holdout, split.y_holdout)
    registered = tracking.log_and_register(
        train_model(data, settings.model), split, load_table(settings.data.training), settings,
        data_path=settings.data.training, tags={"trigger": "manual"},
    )
    return registered, tracking.gate_challenger(registered, split, settings)


def _version_tags(settings, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return MlflowClient().get_model_version(settings.model.name, version).tags


def test_audit__gate_promote_rollback_schedule_and_retrain_each_write_one_line(tool_env, settings, split, monkeypatch):
    from mlops import retraining, schedules

    monkeypatch.setenv("MLOPS_ACTOR", "ci-job-17")
    weak, _ = _train_and_gate(settings, split, rows=12)
    strong, decision = _train_and_gate(settings, split)
    assert decision.promoted
    tracking.rollback(settings, split, reason="latency regression")
    tracking.promote_version(settings, strong.version, split, reason="fixed upstream")
    schedules.deployments(settings, None)
    schedules.deployments(settings, None)  # the same schedules again: no change, no line
    changed = settings.model_copy(update={"schedules": settings.schedules.model_copy(update={"training_cron": "0 4 * * *"})})
    schedules.deployments(changed, None)
    trigger = retraining.decide_retrain(
        drift_share=0.6, quality=None, window_rows=500, history=retraining.RetrainHistory(), policy=settings.monitoring,
        labeled_rows=40,
    )
    retraining.record_trigger(settings, trigger, "monitoring-run-1")

    entries = audit.read_audit(settings)  # newest first
    assert [(e["kind"], e["version"]) for e in entries] == [
        ("retrain", strong.version), ("schedule", None), ("schedule", None), ("promote", strong.version),
        ("rollback", weak.version), ("gate", strong.version), ("gate", weak.version),
    ]
    assert all(set(entry) >= FIELDS and entry["by"] == "ci-job-17" and entry["model"] == settings.model.name for entry in entries)
    retrain, changed_line, created, promote, rollback, gate, _ = entries
    assert (gate["run_id"], rollback["run_id"]) == (strong.run_id, weak.run_id)
    assert (rollback["reason"], rollback["previous"]) == ("latency regression", strong.version)
    assert (promote["reason"], promote["previous"]) == ("fixed upstream", weak.version)
    assert created["reason"].startswith("created: training '0 3 * * *'")
    assert changed_line["reason"].startswith("changed to training '0 4 * * *'")
    assert changed_line["previous"] == created["schedule"]
    assert retrain["run_id"] == "monitoring-run-1" and retrain["triggers"] == list(trigger.triggers)
    assert retrain["reason"].startswith("retrain: drift share")
    # Mirrored on the versions as MLflow tags: the latest event of each kind.
    tags = _version_tags(settings, strong.version)
    assert json.loads(tags["mlops.audit.promote"]) == promote and json.loads(tags["mlops.audit.retrain"]) == retrain
    assert json.loads(_version_tags(settings, weak.version)["mlops.audit.rollback"]) == rollback
    assert tracking.read_audit(settings)[-1]["kind"] == "promote", "the registry's view: alias moves, oldest first"

    shown = subprocess.run(
        [str(MLOPS), "--state-dir", str(settings.state_dir), "audit", "--json", "--limit", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == entries[:3]
    text = subprocess.run(
        [str(MLOPS), "--state-dir", str(settings.state_dir), "audit"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and len(lines) == len(entries), text.stderr
    assert "ci-job-17  retrain" in lines[0] and "fixed upstream" in lines[3] and "Traceback" not in text.stderr


def test_audit__secrets_never_reach_the_log_or_the_tags(tool_env, settings, monkeypatch):
    from pydantic import SecretStr

    from mlops.config import AlertsConfig

    monkeypatch.setenv("MLOPS_API_KEY", "api-key-s3cret")
    hooked = settings.model_copy(update={"alerts": AlertsConfig(webhook_url=SecretStr("https://hooks.example/T0KEN-abc"))})
    reason = "moved by https://alice:pa55word@mlflow.example/ with api-key-s3cret after https://hooks.example/T0KEN-abc"

    entry = audit.record(hooked, "schedule", reason=reason)

    written = (settings.state_dir / audit.AUDIT_FILE).read_text(encoding="utf-8")
    for secret in ("pa55word", "api-key-s3cret", "T0KEN-abc"):
        assert secret not in written and secret not in json.dumps(entry)
    assert "https://***@mlflow.example/" in entry["reason"]


_WRITER = """
import sys
from pathlib import Path
from mlops.audit import append_entry
path, writer = Path(sys.argv[1]), sys.argv[2]
for n in range(int(sys.argv[3])):
    append_entry(path, {"writer": writer, "n": n, "reason": writer * 20000})
"""


def test_append_entry__concurrent_writers_never_interleave_and_wait_for_the_lock(tmp_path: Path):
    from filelock import FileLock

    path = tmp_path / "audit.jsonl"
    with FileLock(f"{path}.lock"):  # held: a writer must wait, not write beside it
        held = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "w", "1"])
        time.sleep(1.5)
        assert not path.exists() or path.read_text() == "", "a writer wrote while another held the lock"
    assert held.wait(60) == 0

    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, "40"]) for name in "abcd"]
    assert [writer.wait(120) for writer in writers] == [0, 0, 0, 0]

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1 + 4 * 40
    for name in "abcd":
        assert [line["n"] for line in lines if line["writer"] == name] == list(range(40))
        assert all(line["reason"] == name * 20000 for line in lines if line["writer"] == name)
