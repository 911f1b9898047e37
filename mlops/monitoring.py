"""Monitoring: has the production input drifted away from the training data?

A thin adapter over Evidently 0.7's ``DataDriftPreset``. Evidently picks a
statistical test per column (K-S p-value for numerical columns up to 1000 rows,
a normed Wasserstein distance above) and says whether each column drifted; we
count the drifted columns and compare their share with our own threshold
(``monitoring.drift_share_threshold``)::

    summary = compute_drift(train[features], current[features], threshold=0.3,
                            report_path="reports/drift.html")
    if summary.drift_detected:
        print(summary.summary())

Drift is detected when ``drift_share >= threshold`` (the same rule Evidently uses
for its dataset-level verdict), so a threshold of 0.3 means "30 % or more of the
columns drifted". Evidently and pandas are imported inside the functions, so
``import mlops.monitoring`` stays instant.

Large data (either side above ``2 × sample_rows`` rows, reference above 1000): the
Evidently report runs on a uniform sample of ``sample_rows`` rows per side (the HTML
is for people), and each column's verdict is made so that it equals the verdict of
Evidently on all rows:

- Columns Evidently scores with a normed Wasserstein distance W(R, C)/σ_R are
  screened on the sample (then on one ten times larger, if needed). W₁ is a metric, so the sampled score is off by at most
  (W(R̂, R) + W(Ĉ, C))/σ_R, and E W(F̂ₙ, F) ≤ J(F)/√n with J(F) = ∫√(F(1−F))dx
  (Bobkov & Ledoux, 2019, Thm 3.5). σ_R comes from all rows (exact, O(n)); J is
  estimated on the sample. A column whose sampled score lies within
  ``3 × (J_R/√n_R + J_C/√n_C)/σ_R`` of the threshold is recomputed on all rows.
- Every other column (Jensen–Shannon for categories and few-valued numbers) is
  computed on all rows: it costs a histogram.

Recomputed columns use Evidently's own stat test on all rows, so their scores are
Evidently's; ``ColumnDrift.exact`` says which scores were computed on all rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import DataError, MlopsError
from mlops.prediction_log import read_prediction_log

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

__all__ = [
    "ColumnDrift",
    "DriftSummary",
    "compute_drift",
    "join_labels",
    "load_current_window",
    "log_monitoring_run",
    "save_summary",
    "window_quality",
]

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
DEFAULT_SAMPLE_ROWS = 20_000
_BOUND_FACTOR = 3.0
_WASSERSTEIN = "Wasserstein distance (normed)"


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict for one column: which test, its score and its threshold."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    exact: bool = True


@dataclass(frozen=True)
class DriftSummary:
    """What a drift check found, small enough to log, print and save as JSON."""

    reference_rows: int
    current_rows: int
    columns: tuple[ColumnDrift, ...]
    drifted_columns: tuple[str, ...]
    drift_share: float
    threshold: float
    drift_detected: bool
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return asdict(self)

    def summary(self) -> str:
        """A few readable lines for the CLI and the logs."""
        verdict = "DRIFT DETECTED" if self.drift_detected else "no drift"
        lines = [
            f"{verdict}: {len(self.drifted_columns)} of {len(self.columns)} columns drifted "
            f"(share {self.drift_share:.2f}, threshold {self.threshold:.2f}); "
            f"reference {self.reference_rows} rows, current {self.current_rows} rows.",
        ]
        if self.drifted_columns:
            lines.append("Drifted: " + ", ".join(self.drifted_columns) + ".")
        if self.report_path:
            lines.append(f"Report: {self.report_path}")
        return "\n".join(lines)


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    threshold: float,
    columns: Sequence[str] | None = None,
    report_path: str | Path | None = None,
    min_rows: int = 1,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> DriftSummary:
    """Compare ``current`` with ``reference`` column by column with Evidently.

    ``columns`` defaults to the columns both frames share; pass the feature list
    to leave out the target, the prediction and log metadata. The HTML report is
    written to ``report_path`` when given, so a human can see *why* it drifted.
    Above ``2 × sample_rows`` rows the report runs on a sample and the verdicts
    are confirmed on all rows (module docstring).
    """
    selected = _select_columns(reference, current, columns)
    _check_rows(reference, current, min_rows)
    large = len(reference) > 1000 and max(len(reference), len(current)) > 2 * sample_rows
    ref_report, cur_report = (
        (_sample(reference, sample_rows), _sample(current, sample_rows)) if large else (reference, current)
    )
    snapshot = _run_report(ref_report[selected], cur_report[selected], threshold)
    saved = _save_html(snapshot, report_path) if report_path is not None else None
    drifts = _column_drifts(snapshot.dict(), selected)
    if large:
        drifts = tuple(
            _confirm(drift, reference[drift.column], current[drift.column], sample_rows) for drift in drifts
        )
    drifted = tuple(drift.column for drift in drifts if drift.drifted)
    share = len(drifted) / len(drifts)
    return DriftSummary(
        reference_rows=len(reference),
        current_rows=len(current),
        columns=drifts,
        drifted_columns=drifted,
        drift_share=share,
        threshold=threshold,
        drift_detected=share >= threshold,
        report_path=saved,
    )


def load_current_window(
    predictions_dir: str | Path,
    feature_columns: Sequence[str],
    last: int | None = None,
    since_minutes: float | None = None,
    *,
    with_metadata: bool = False,
) -> pd.DataFrame:
    """The inputs the endpoint has served (the newest ``last`` records, logged in the last
    ``since_minutes``), features only unless ``with_metadata`` (request_id, record, prediction…).

    This is the "current" side of a drift check when no batch file is given.
    """
    log = read_prediction_log(predictions_dir)
    if since_minutes is not None and not log.empty:
        import pandas as pd

        cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=since_minutes)
        log = log[pd.to_datetime(log["timestamp"], utc=True, format="ISO8601") >= cutoff]
    if last is not None:
        log = log.iloc[-last:]
    if log.empty:
        raise DataError(
            f"No predictions are logged in {predictions_dir} yet. Serve the model and send it "
            "requests, or pass --current FILE to check a batch file instead."
        )
    missing = [column for column in feature_columns if column not in log.columns]
    if missing:
        raise DataError(
            f"The prediction log in {predictions_dir} has no input column(s) {', '.join(missing)}. "
            "Send requests with every feature, or pass --current FILE."
        )
    return (log if with_metadata else log[list(feature_columns)]).reset_index(drop=True)


def save_summary(summary: DriftSummary, path: str | Path) -> Path:
    """Write the summary as JSON beside the HTML report, for flows and dashboards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _select_columns(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        selected = [column for column in reference.columns if column in set(current.columns)]
        if not selected:
            raise DataError("Reference and current data share no column. Check that both hold the same features.")
        return selected
    selected = list(columns)
    if not selected:
        raise DataError("No column to check for drift. Pass at least one feature column.")
    for name, frame in (("reference", reference), ("current", current)):
        missing = [column for column in selected if column not in frame.columns]
        if missing:
            raise DataError(
                f"The {name} data lacks column(s) {', '.join(missing)}. "
                "Provide data with every feature, or leave those columns out of the check."
            )
    return selected


def _check_rows(reference: pd.DataFrame, current: pd.DataFrame, min_rows: int) -> None:
    for name, frame in (("reference", reference), ("current", current)):
        if len(frame) < max(min_rows, 1):
            raise DataError(
                f"The {name} data has {len(frame)} row(s); a drift check needs at least {max(min_rows, 1)}. "
                "Collect more predictions (or lower monitoring.min_rows), or pass a larger batch."
            )


def _run_report(reference: pd.DataFrame, current: pd.DataFrame, threshold: float) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current, definition = _typed_frames(reference, current)
    columns = list(reference.columns)
    # include_tests gives Evidently's own per-column verdict; drift_share makes the
    # HTML report's dataset-level verdict agree with ours.
    report = Report([DataDriftPreset(columns=columns, drift_share=threshold)], include_tests=True)
    return report.run(
        reference_data=Dataset.from_pandas(reference, data_definition=DataDefinition(**definition)),
        current_data=Dataset.from_pandas(current, data_definition=DataDefinition(**definition)),
    )


def _typed_frames(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    # Evidently infers column types per frame: an int column with <= 10 distinct
    # values counts as categorical (chi-square), so a float feature logged as ints
    # would switch tests. We declare the types from the reference and cast to float.
    import pandas as pd

    numerical = [column for column in reference.columns if pd.api.types.is_numeric_dtype(reference[column])]
    categorical = [column for column in reference.columns if column not in numerical]
    try:
        current = current.astype({column: "float64" for column in numerical})
    except (TypeError, ValueError) as exc:
        raise DataError(f"The current data has non-numeric values in a numerical feature: {exc}") from None
    reference = reference.astype({column: "float64" for column in numerical})
    return reference, current, {"numerical_columns": numerical, "categorical_columns": categorical}


def _save_html(snapshot: Any, path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Evidently 0.7 silently writes nothing when given a Path: pass a str.
    snapshot.save_html(str(path))
    return str(path)


def _column_drifts(result: dict[str, Any], columns: list[str]) -> tuple[ColumnDrift, ...]:
    # Metric results and test verdicts are matched by metric id and column name,
    # never by position in the lists.
    verdicts = {test["metric_config"]["metric_id"]: test["status"] for test in result["tests"]}
    found: dict[str, ColumnDrift] = {}
    for metric in result["metrics"]:
        config = metric.get("config", {})
        if config.get("type") != _VALUE_DRIFT or metric["id"] not in verdicts:
            continue
        found[config["column"]] = ColumnDrift(
            column=config["column"],
            method=str(config["method"]),
            score=float(metric["value"]),
            threshold=float(config["threshold"]),
            drifted=verdicts[metric["id"]] == "FAIL",
        )
    missing = [column for column in columns if column not in found]
    if missing:
        raise MlopsError(
            f"Evidently returned no drift verdict for column(s) {', '.join(missing)}. "
            "Check the installed Evidently version (0.7 is supported)."
        )
    return tuple(found[column] for column in columns)


def _sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=0)


def _confirm(screened: ColumnDrift, reference: pd.Series, current: pd.Series, sample_rows: int) -> ColumnDrift:
    """Keep a sampled Wasserstein verdict only when it cannot flip on all rows; else recompute.

    Tries the report's sample, then one ten times larger, before all rows.
    """
    if screened.method == _WASSERSTEIN and _numeric(reference):
        import numpy as np

        sigma = max(float(np.std(reference.to_numpy(dtype="float64"))), 0.001)
        for rows in (sample_rows, 10 * sample_rows):
            if 2 * rows >= max(len(reference), len(current)):
                break
            score, margin = _sampled_wasserstein(_sample(reference, rows), _sample(current, rows), sigma)
            if abs(score - screened.threshold) > margin:
                return replace(screened, score=score, drifted=score >= screened.threshold, exact=False)
    return _exact_drift(screened, reference, current)


def _sampled_wasserstein(ref_sample: pd.Series, cur_sample: pd.Series, sigma: float) -> tuple[float, float]:
    """The normed distance on the samples (σ from all rows) and the bound on its error."""
    import numpy as np
    from scipy import stats

    ref, cur = (np.sort(s.dropna().to_numpy(dtype="float64")) for s in (ref_sample, cur_sample))
    score = float(stats.wasserstein_distance(ref, cur)) / sigma
    margin = _BOUND_FACTOR * (_spread(ref) / np.sqrt(len(ref)) + _spread(cur) / np.sqrt(len(cur))) / sigma
    return score, float(margin)


def _spread(sorted_values: Any) -> float:
    """J(F̂) = ∫ √(F̂(1 − F̂)) dx of the empirical distribution of ``sorted_values``."""
    import numpy as np

    n = len(sorted_values)
    if n < 2:
        return 0.0
    cdf = np.arange(1, n) / n
    return float(np.sum(np.sqrt(cdf * (1 - cdf)) * np.diff(sorted_values)))


def _exact_drift(screened: ColumnDrift, reference: pd.Series, current: pd.Series) -> ColumnDrift:
    """Evidently's own default stat test for the column, on all rows."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Numerical if _numeric(reference) else ColumnType.Categorical
    if kind == ColumnType.Numerical:
        reference, current = reference.astype("float64"), current.astype("float64")
    reference, current = reference.dropna(), current.dropna()
    # Evidently picks the test per column from row and distinct-value counts.
    test = get_stattest(reference, current, kind, None)
    result = test(reference, current, kind, None)
    return replace(
        screened,
        method=test.display_name,
        score=float(result.drift_score),
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
        exact=True,
    )


def _numeric(series: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series)


def join_labels(window: pd.DataFrame, labels_path: str | Path) -> pd.DataFrame:
    """The logged predictions that have a ground-truth label, with a ``label`` column.

    Labels file (CSV): ``request_id``, ``label`` and optionally ``record`` (the
    record's position in its request, default 0), one row per labeled prediction.
    """
    from mlops.data import load_table

    labels = load_table(labels_path)
    missing = [column for column in ("request_id", "label") if column not in labels.columns]
    if missing:
        raise DataError(
            f"Labels file {labels_path} lacks column(s) {', '.join(missing)}. "
            "It needs request_id, label and optionally record (position in the request)."
        )
    if "record" not in labels.columns:
        labels = labels.assign(record=0)
    labels = labels.astype({"request_id": str, "record": int})
    keyed = window.astype({"request_id": str, "record": int})
    return keyed.merge(labels[["request_id", "record", "label"]], on=["request_id", "record"], how="inner")


def window_quality(labeled: pd.DataFrame, task: str) -> dict[str, float]:
    """Quality of the served predictions on labeled rows: accuracy/f1 or rmse/mae."""
    from sklearn import metrics

    if labeled.empty:
        return {}
    truth, predicted = labeled["label"], labeled["prediction"]
    if task == "regression":
        return {
            "rmse": float(metrics.root_mean_squared_error(truth, predicted)),
            "mae": float(metrics.mean_absolute_error(truth, predicted)),
        }
    average = "binary" if truth.nunique() <= 2 and predicted.nunique() <= 2 else "macro"
    return {
        "accuracy": float(metrics.accuracy_score(truth, predicted)),
        "f1": float(metrics.f1_score(truth, predicted, average=average, zero_division=0)),
    }


def log_monitoring_run(
    summary: DriftSummary,
    *,
    experiment: str,
    artifact_dir: Path,
    model_name: str,
    model_version: str | None,
    quality: dict[str, float] | None = None,
    artifacts: Sequence[str | Path] = (),
    tags: dict[str, str] | None = None,
) -> str:
    """Record one monitoring check as an MLflow run linked to the model version it watched."""
    import mlflow

    experiment_id = _monitoring_experiment(experiment, artifact_dir)
    run_tags = {
        "mlops.kind": "monitoring",
        "mlops.model_name": model_name,
        "mlops.model_version": model_version or "",
        "mlops.drift_detected": str(summary.drift_detected).lower(),
        **(tags or {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name="monitoring", tags=run_tags) as run:
        mlflow.log_params({"drift_share_threshold": summary.threshold, "window_rows": summary.current_rows})
        mlflow.log_metrics({"drift_share": summary.drift_share, "drifted_columns": len(summary.drifted_columns)})
        mlflow.log_metrics({f"window_{name}": value for name, value in (quality or {}).items()})
        mlflow.log_dict(summary.to_dict(), "drift/summary.json")
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="drift")
    return run.info.run_id


def _monitoring_experiment(name: str, artifact_dir: Path) -> str:
    # Artifacts under the state folder: MLflow's default would be ./mlruns in the CWD.
    import mlflow

    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifact_dir.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=artifact_dir.resolve().as_uri())
