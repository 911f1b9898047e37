"""The contract at each enforcement point, as real Prefect flow runs over a real MLflow store.

The guarantee: a blocked run leaves the registry (versions, aliases, tags), the runs,
the BentoML store and the scoring output exactly as they were, read back after a
champion exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.data import load_table
from mlops.errors import ValidationFailed

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _registry_snapshot(settings) -> dict:
    import mlflow

    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name='{settings.model.name}'")
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    return {
        "versions": sorted((v.version, v.current_stage, tuple(sorted(v.tags.items()))) for v in versions),
        "aliases": sorted(
            (alias, version) for model in client.search_registered_models() for alias, version in model.aliases.items()
        ),
        "runs": sorted(run.info.run_id for run in client.search_runs(experiments)),
        "bentoml_store": sorted(str(path) for path in settings.bentoml_home.rglob("*")),
    }


def _bad_copy(settings, tmp_path: Path) -> Path:
    bad = load_table(settings.data.training)
    bad.loc[:9, "mean_radius"] = -5.0
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    return path


def test_blocked_runs__leave_registry_aliases_store_and_outputs_untouched(tool_env, settings, tmp_path):
    from flows.scoring import scoring_flow
    from flows.training import training_flow

    training_flow(settings)
    before = _registry_snapshot(settings)
    assert ("champion", 1) in before["aliases"]
    bad = _bad_copy(settings, tmp_path)
    output = tmp_path / "scores.csv"

    with pytest.raises(ValidationFailed, match="mean_radius"):
        training_flow(settings, data_path=bad)
    with pytest.raises(ValidationFailed, match="Nothing was scored"):
        scoring_flow(settings, data_path=settings.data.current, output_path=output)

    assert _registry_snapshot(settings) == before
    assert not output.exists() and not list(tmp_path.glob(".*partial"))
    assert list(settings.reports_dir.glob("validation-scoring-*.html")), "the blocked batch still gets its report"


def test_scoring_flow__validates_then_scores_with_the_champion(tool_env, settings, tmp_path):
    from flows.scoring import scoring_flow
    from flows.training import training_flow

    trained = training_flow(settings)
    batch = tmp_path / "batch.csv"
    load_table(settings.data.training).head(25).to_csv(batch, index=False)

    outcome = scoring_flow(settings, data_path=batch)

    scores = load_table(outcome.output_path)
    assert outcome.model_version == trained.registered.version and outcome.rows == 25
    assert outcome.output_path == settings.state_dir / "scores" / "batch-scores.csv"
    assert {"prediction", "probability_0", "probability_1"} <= set(scores.columns) and len(scores) == 25
    assert (scores["prediction"] == scores["target"]).mean() > 0.8
    assert outcome.validation.success and outcome.validation_report.is_file()


def test_monitoring_flow__missing_contract_column_is_a_violation_not_drift(tool_env, settings, tmp_path):
    from flows.monitoring import monitoring_flow

    current = load_table(settings.data.current).drop(columns=["mean_radius"])
    path = tmp_path / "current.csv"
    current.to_csv(path, index=False)

    with pytest.raises(ValidationFailed, match="missing columns=\\['mean_radius'\\]"):
        monitoring_flow(settings, current_path=path)

    assert not list(settings.reports_dir.glob("drift-*")), "no drift was measured"
    assert list(settings.reports_dir.glob("contract-current-*.html"))


def test_cli_score__blocked_batch_exits_1_and_writes_nothing(tmp_path):
    output = tmp_path / "out.csv"
    environment = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path / "state")}
    command = [str(Path(sys.executable).with_name("mlops")), "score", "data/current.csv", "--output", str(output)]

    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment, timeout=600)

    assert result.returncode == 1, result.stderr
    assert "Validation FAILED" in result.stderr and "mean_smoothness" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("score", "tests/corpus/does_not_exist.csv"), "does not exist"),
        (("train", "--data", "tests/corpus/semicolon.csv"), "looks delimited by ';'"),
        (("score", "data/train.csv"), "Run `mlops train` first"),
    ],
)
def test_cli__unreadable_input_or_no_champion_exits_2_without_traceback(tmp_path, args, message):
    environment = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path / "state")}
    command = [str(Path(sys.executable).with_name("mlops")), *args]

    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment, timeout=600)

    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "scores").exists()
