"""Monitoring stage: real Evidently on the bundled data, no mocks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from datasets import build

from mlops.data import load_table
from mlops.errors import DataError
from mlops.monitoring import (
    ColumnDrift,
    DriftSummary,
    compute_drift,
    join_labels,
    load_current_window,
    log_monitoring_run,
    save_summary,
    window_quality,
)
from mlops.prediction_log import PredictionLogWriter, read_prediction_log
from mlops.tracking import create_experiment

DATA = Path(__file__).resolve().parents[1] / "data"
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return load_table(DATA / "train.csv")


@pytest.fixture(scope="module")
def current() -> pd.DataFrame:
    return load_table(DATA / "current.csv")


@pytest.fixture(scope="module")
def features(train: pd.DataFrame) -> list[str]:
    return [column for column in train.columns if column != "target"]


@pytest.fixture(scope="module")
def shifted(train, current, features, tmp_path_factory) -> DriftSummary:
    """One Evidently run on the shifted batch, shared by the tests that read it."""
    report = tmp_path_factory.mktemp("reports") / "nested" / "drift.html"
    return compute_drift(train, current, threshold=THRESHOLD, columns=features, report_path=report)


def test_compute_drift__shifted_batch_detects_drift(shifted: DriftSummary, features: list[str]) -> None:
    assert shifted.drift_detected
    assert shifted.drift_share >= THRESHOLD
    assert shifted.drift_share == pytest.approx(len(shifted.drifted_columns) / len(features))
    assert [drift.column for drift in shifted.columns] == features
    assert (shifted.reference_rows, shifted.current_rows) == (469, 100)


def test_compute_drift__shifted_batch_flags_shifted_columns_only(shifted: DriftSummary) -> None:
    drifted = set(shifted.drifted_columns)
    assert {"mean_radius", "mean_texture", "worst_radius", "worst_area", "worst_smoothness"} <= drifted
    # Only mean_* and worst_* were scaled; the *_error columns are untouched
    # (their K-S p-values are all above 0.15 on this data).
    assert not {column for column in drifted if column.endswith("_error")}
    shifted_columns = [c for c in (d.column for d in shifted.columns) if c.startswith(("mean_", "worst_"))]
    assert len(drifted) >= 0.8 * len(shifted_columns)


def test_compute_drift__column_verdicts_carry_method_and_threshold(shifted: DriftSummary) -> None:
    radius = next(drift for drift in shifted.columns if drift.column == "mean_radius")
    assert radius.method == "K-S p_value"  # Evidently's choice for numerical data under 1000 rows
    assert radius.threshold == pytest.approx(0.05)
    assert radius.drifted and radius.score < radius.threshold


def test_compute_drift__html_report_written(shifted: DriftSummary) -> None:
    assert shifted.report_path is not None
    report = Path(shifted.report_path)
    assert report.is_file()
    assert report.stat().st_size > 100_000
    assert "<html" in report.read_text(encoding="utf-8")[:2000].lower()


def test_compute_drift__report_lists_drifted_columns_first_under_a_summary(tmp_path: Path) -> None:
    # Given wines whose alcohol shifted, with columns derived from it (a ratio, a text category)
    train, current, _ = build("wines")
    for frame in (train, current):
        frame["alcohol per hue"] = frame["alcohol"] / frame["hue"]
        frame["strength"] = np.where(frame["alcohol"] > 13.0, "strong", "light")
    columns = ["malic_acid", "ash", "alcohol", "magnesium", "alcohol per hue", "hue", "strength"]
    # When the drift report is written
    summary = compute_drift(train, current, threshold=THRESHOLD, columns=columns, categorical=["strength"],
                            report_path=tmp_path / "drift.html")
    # Then some columns drifted and some did not
    drifted, steady = list(summary.drifted_columns), [c for c in columns if c not in summary.drifted_columns]
    assert "alcohol" in drifted and "magnesium" in steady and summary.drift_detected
    page = Path(str(summary.report_path)).read_text(encoding="utf-8")
    start, end = page.index('<section id="mlops-drift-summary">'), page.index("</section>")
    block, dashboard = page[start:end], page[:start] + page[end:]
    # the summary opens the page's body, drifted columns first, with their scores and the threshold rule
    assert page.index("<body>") + len("<body>") == start
    assert max(block.index(f"<td>{c}</td>") for c in drifted) < min(block.index(f"<td>{c}</td>") for c in steady)
    assert f"Share of drifted columns {summary.drift_share:.2f} ≥ threshold 0.30: a retrain is due." in block
    # Evidently's column table lists the drifted columns before any other
    listed = re.findall(r'"column_name": "([^"]+)"', dashboard)
    assert sorted(listed) == sorted(columns)
    assert set(listed[: len(drifted)]) == set(drifted)
    # and the page needs no network: no script or stylesheet is fetched
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", page)


def test_compute_drift__sample_of_reference_has_no_drift(train, features) -> None:
    half = train.sample(frac=0.5, random_state=0)
    summary = compute_drift(train, half, threshold=THRESHOLD, columns=features)
    assert summary.drift_share < THRESHOLD
    assert not summary.drift_detected
    assert summary.report_path is None


def test_compute_drift__integer_feature_stays_numerical(train, current) -> None:
    # Given a feature that arrives as a few distinct integers (Evidently would call it categorical)
    batch = current[["mean_radius", "mean_texture"]].copy()
    batch["mean_radius"] = batch["mean_radius"].round().astype(int).clip(10, 15)
    summary = compute_drift(train, batch, threshold=THRESHOLD, columns=["mean_radius", "mean_texture"])
    assert {drift.method for drift in summary.columns} == {"K-S p_value"}


def test_compute_drift__default_columns_are_the_shared_ones(train, current) -> None:
    reference = train[["mean_radius", "radius_error", "target"]]
    summary = compute_drift(reference, current[["mean_radius", "radius_error"]], threshold=THRESHOLD)
    assert [drift.column for drift in summary.columns] == ["mean_radius", "radius_error"]


def test_compute_drift__missing_column_raises_data_error(train, current, features) -> None:
    with pytest.raises(DataError, match="current data lacks column.*mean_radius"):
        compute_drift(train, current.drop(columns=["mean_radius"]), threshold=THRESHOLD, columns=features)


def test_compute_drift__empty_current_raises_data_error(train, current, features) -> None:
    with pytest.raises(DataError, match="current data has 0 row"):
        compute_drift(train, current.iloc[:0], threshold=THRESHOLD, columns=features)


def test_compute_drift__fewer_rows_than_min_rows_raises_data_error(train, current, features) -> None:
    with pytest.raises(DataError, match="at least 30"):
        compute_drift(train, current.iloc[:10], threshold=THRESHOLD, columns=features, min_rows=30)


def test_compute_drift__text_in_numerical_feature_raises_data_error(train, current) -> None:
    batch = current[["mean_radius"]].astype(object)
    batch.loc[0, "mean_radius"] = "n/a"
    with pytest.raises(DataError, match="non-numeric"):
        compute_drift(train, batch, threshold=THRESHOLD, columns=["mean_radius"])


def test_load_current_window__reads_logged_inputs(tmp_path: Path, current, features) -> None:
    # Given 20 records logged by the serving endpoint's writer
    writer = PredictionLogWriter(tmp_path / "predictions")
    records = current[features].iloc[:20].to_dict(orient="records")
    writer.log(request_id="r1", model_name="m", model_version="1", inputs=records[:12], predictions=[1] * 12)
    writer.log(request_id="r2", model_name="m", model_version="1", inputs=records[12:], predictions=[0] * 8)
    writer.close()
    # When the window is read
    window = load_current_window(tmp_path / "predictions", features, last=15)
    # Then only the features of the newest 15 records remain
    assert list(window.columns) == features
    assert len(window) == 15
    pd.testing.assert_frame_equal(window, current[features].iloc[5:20].reset_index(drop=True))


def test_prediction_log__a_frame_logs_the_same_lines_as_its_records(tmp_path: Path, current, features) -> None:
    import numpy as np

    frame = current[features].iloc[:5]
    for name, inputs in (("frame", frame), ("records", frame.to_dict(orient="records"))):
        writer = PredictionLogWriter(tmp_path / name)
        writer.log(request_id="r", model_name="m", model_version="1", inputs=inputs, predictions=np.array([0, 1, 0, 1, 1]))
        writer.close()
    logged = [(tmp_path / name).joinpath(next((tmp_path / name).iterdir()).name).read_text() for name in ("frame", "records")]
    strip = [[line.split('"request_id"', 1)[1] for line in text.splitlines()] for text in logged]  # timestamps differ
    assert strip[0] == strip[1] and len(strip[0]) == 5


def test_prediction_log__over_the_bound_drops_and_counts_whole_requests(tmp_path: Path, current, features) -> None:
    writer = PredictionLogWriter(tmp_path / "log", max_queued=5)
    writer.log(request_id="big", model_name="m", model_version="1", inputs=current[features].iloc[:10], predictions=[1] * 10)
    writer.log(request_id="small", model_name="m", model_version="1", inputs=current[features].iloc[:2], predictions=[1] * 2)
    writer.close()
    assert writer.dropped == 10
    assert read_prediction_log(tmp_path / "log")["request_id"].tolist() == ["small", "small"]


def test_load_current_window__empty_dir_raises_data_error(tmp_path: Path, features) -> None:
    with pytest.raises(DataError, match="--current FILE"):
        load_current_window(tmp_path / "predictions", features)


def test_save_summary__json_round_trips(shifted: DriftSummary, tmp_path: Path) -> None:
    path = save_summary(shifted, tmp_path / "out" / "drift.json")
    loaded = json.loads(path.read_text(encoding="utf-8"))
    rebuilt = DriftSummary(
        **{
            **loaded,
            "columns": tuple(ColumnDrift(**column) for column in loaded["columns"]),
            "drifted_columns": tuple(loaded["drifted_columns"]),
        }
    )
    assert rebuilt == shifted


def test_summary__names_verdict_and_drifted_columns(shifted: DriftSummary) -> None:
    text = shifted.summary()
    assert text.startswith("DRIFT DETECTED")
    assert "mean_radius" in text
    assert f"of {len(shifted.columns)} columns" in text


def test_import__evidently_is_loaded_only_to_measure_drift() -> None:
    code = "import sys, mlops.monitoring; print(sorted(m for m in ('evidently',) if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def _graded_shift_frames(rows: int, seed: int = 5):
    """Numeric columns shifted by growing amounts (scores on both sides of 0.1) and categories."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)

    def frame(shift: bool) -> pd.DataFrame:
        data = {f"num_{i}": rng.normal(0.04 * i * shift, 1, rows) for i in range(10)}
        probabilities = [0.3, 0.2, 0.2, 0.15, 0.15] if shift else [0.2] * 5
        data["cat"] = rng.choice(list("abcde"), rows, p=probabilities)
        return pd.DataFrame(data)

    return frame(False), frame(True)


def test_compute_drift__sampled_verdicts_equal_the_full_data_verdicts():
    reference, current = _graded_shift_frames(60_000)
    fast = compute_drift(reference, current, threshold=0.3, sample_rows=5_000)
    full = compute_drift(reference, current, threshold=0.3, sample_rows=10**9)
    assert [c.drifted for c in fast.columns] == [c.drifted for c in full.columns]
    assert any(c.drifted for c in full.columns) and not all(c.drifted for c in full.columns)
    assert any(not c.exact for c in fast.columns), "clear-cut columns are decided on the sample"
    for sampled, exact in zip(fast.columns, full.columns):
        if sampled.exact:
            assert sampled.score == pytest.approx(exact.score, rel=1e-9)
            assert sampled.method == exact.method


def test_join_labels__matches_request_and_record(tmp_path):
    writer = PredictionLogWriter(tmp_path / "log")
    rows = [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]
    writer.log(request_id="req-1", model_name="m", model_version="1", inputs=rows[:2], predictions=[0, 1])
    writer.log(request_id="req-2", model_name="m", model_version="1", inputs=rows[2:], predictions=[1])
    writer.close()
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,record,label\nreq-1,1,1\nreq-2,0,0\nreq-9,0,1\n")
    from mlops.prediction_log import read_prediction_log

    labeled = join_labels(read_prediction_log(tmp_path / "log"), labels)
    assert sorted(zip(labeled.rows["a"], labeled.rows["label"])) == [(2.0, 1), (3.0, 0)]
    assert (labeled.labels, labeled.labeled_rows, labeled.unmatched, labeled.invalid) == (3, 2, 1, 0)
    quality = window_quality(labeled, "classification")
    assert quality["accuracy"] == 0.5 and quality["f1"] == pytest.approx(2 / 3)
    assert {"balanced_accuracy", "precision", "recall"} <= set(quality)


def test_join_labels__file_without_required_columns_is_a_data_error(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,truth\n1,0\n")
    with pytest.raises(DataError, match="request_id, label"):
        join_labels(pd.DataFrame({"request_id": [], "record": []}), labels)


def test_window_quality__regression_errors():
    labeled = pd.DataFrame({"label": [1.0, 2.0, 4.0], "prediction": [1.0, 3.0, 4.0]})
    quality = window_quality(labeled, "regression")
    assert quality["mae"] == pytest.approx(1 / 3)
    assert quality["rmse"] == pytest.approx((1 / 3) ** 0.5)
    assert quality["r2"] == pytest.approx(1 - 1 / (14 / 3))


def test_log_monitoring_run__links_the_check_to_the_model_version(tool_env, settings, tmp_path):
    import mlflow

    reference = load_table(settings.data.training).drop(columns=["target"])
    current = load_table(settings.data.current).drop(columns=["target"])
    summary = compute_drift(reference, current, threshold=0.3, report_path=tmp_path / "drift.html")
    run_id = log_monitoring_run(
        summary,
        experiment_id=create_experiment("breast-cancer-monitoring", settings),
        model_name="breast-cancer-classifier",
        model_version="3",
        quality={"accuracy": 0.9},
        labeled_rows=40,
        invalid_labels=2,
        artifacts=[tmp_path / "drift.html"],
    )
    run = mlflow.get_run(run_id)
    assert run.data.tags["mlops.model_version"] == "3"
    assert run.data.metrics["drift_share"] == pytest.approx(summary.drift_share)
    assert run.data.metrics["window_accuracy"] == 0.9
    assert (run.data.metrics["window_labeled_rows"], run.data.metrics["window_invalid_labels"]) == (40, 2)
    assert list(settings.mlflow_artifact_dir.rglob("drift.html")), "artifacts live under the state folder"


def test_prediction_log__bulk_requests_go_to_parquet_and_read_back_in_order(tmp_path: Path, current, features) -> None:
    import time

    from mlops.prediction_log import BULK_ROWS

    bulk = pd.concat([current[features]] * (BULK_ROWS // len(current) + 1), ignore_index=True).iloc[:BULK_ROWS]
    writer = PredictionLogWriter(tmp_path / "log")
    for request_id, inputs in (("first", current[features].iloc[:2]), ("bulk", bulk), ("last", current[features].iloc[:1])):
        writer.log(request_id=request_id, model_name="m", model_version="1", inputs=inputs, predictions=[1] * len(inputs))
        time.sleep(0.02)  # distinct timestamps
    writer.close()

    assert len(list((tmp_path / "log").glob("*.parquet"))) == 1
    logged = read_prediction_log(tmp_path / "log")
    assert logged["request_id"].tolist() == ["first"] * 2 + ["bulk"] * BULK_ROWS + ["last"]
    assert logged.loc[logged["request_id"] == "bulk", "record"].tolist() == list(range(BULK_ROWS))
    pd.testing.assert_frame_equal(logged.loc[2 : BULK_ROWS + 1, features].reset_index(drop=True), bulk)
    assert read_prediction_log(tmp_path / "log", last=1)["request_id"].tolist() == ["last"]


# --- Refused at serving -------------------------------------------------------------------


def test_refused_traffic__counts_the_422s_since_the_window_began_per_column(tmp_path):
    import pandas as pd

    from mlops.monitoring import refused_traffic
    from mlops.prediction_log import RefusalLog, read_refusals

    log = RefusalLog(tmp_path)
    assert log.log("/predict", ["mean_area"], "1 feature(s) refused: records[0].mean_area: 1e6 is outside [0, 2737]")
    since = pd.Timestamp.now(tz="UTC").isoformat()
    for columns in (["mean_area", "garden"], ["garden"], []):
        assert log.log("/predict", columns, "refused")
    window = pd.DataFrame({"timestamp": [since, since], "request_id": ["a", "b"], "x": [1.0, 2.0]})

    refused = refused_traffic(tmp_path, window)

    assert len(read_refusals(tmp_path)) == 4, "the one before the window is in the log, not in the count"
    assert refused.requests == 3 and refused.by_column == {"garden": 2, "mean_area": 1}
    assert refused.share == 3 / 5  # 2 requests answered in the window
    assert refused.summary().startswith("3 requests refused at serving (422, 60% of the traffic) since ")
    assert refused.summary().endswith(": garden 2, mean_area 1")
    assert refused_traffic(tmp_path / "none", window).summary().startswith("no request refused at serving")


def test_refusal_log__a_flood_of_bad_requests_stops_at_the_daily_cap(tmp_path):
    from mlops.prediction_log import RefusalLog

    log = RefusalLog(tmp_path, max_bytes=2048)
    written = sum(log.log("/predict", ["x"], "y" * 200) for _ in range(100))
    files = list(tmp_path.glob("refused-*.jsonl"))
    assert 5 < written < 100 and len(files) == 1 and files[0].stat().st_size < 2048 + 400
