"""This project's own tests: its data meets its contract, its flows train and score it.

They run the project's real flows (Prefect, MLflow on SQLite) in a temporary state folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mlops

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return mlops.load_settings(project=PROJECT, state_dir=tmp_path_factory.mktemp("state"))


def test_the_training_data_meets_the_contract(settings):
    frame = mlops.tasks.load_data.fn(settings)
    result, report = mlops.tasks.validate_data.fn(frame, settings)
    assert result.success, result.summary()
    assert report.is_file()


def test_the_training_flow_registers_a_champion(settings):
    outcome = mlops.load_flow(settings, "training")(settings)
    assert outcome.registered.version == "1"
    assert outcome.decision.promoted, outcome.decision.reason


def test_the_scoring_flow_scores_the_training_rows_with_the_champion(settings, tmp_path):
    batch = tmp_path / "batch.csv"
    frame = mlops.tasks.load_data.fn(settings)
    frame.drop(columns=[settings.data.target]).head(20).to_csv(batch, index=False)
    outcome = mlops.load_flow(settings, "scoring")(settings, data_path=batch, output_path=tmp_path / "scores.csv")
    assert outcome.rows == 20
    assert outcome.output_path.is_file()
