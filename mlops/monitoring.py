"""Monitoring: has the production input drifted away from the training data, and is it still right?

A thin adapter over Evidently 0.7's ``DataDriftPreset``. Each feature is compared as
a number or as a category, as the data contract says (:func:`drift_columns`: text,
bool and any column with a category set are categories). Evidently picks the
statistical test per column (numbers: K-S p-value up to 1000 reference rows, a normed
Wasserstein distance above; categories: chi-square, or a Z-test for two values, up to
1000 rows, Jensen-Shannon above) and says whether each column drifted; we count the
drifted columns and compare their share with our own threshold
(``monitoring.drift_share_threshold``)::

    features, categorical = drift_columns(contract)
    summary = compute_drift(train, current, threshold=0.3, columns=features,
                            categorical=categorical, report_path="reports/drift.html")
    if summary.drift_detected:
        print(summary.summary())

Drift is detected when ``drift_share >= threshold`` (the same rule Evidently uses
for its dataset-level verdict), so a threshold of 0.3 means "30 % or more of the
columns drifted". Nulls are left out of each column's test, as Evidently does (the
contract check reports null rates); a column with values on one side only (all
null in the window, say) is drifted without a test. A category never seen in
training counts towards drift as Evidently's tests count it (chi-square: a new
category alone is drift). Evidently is imported inside the functions that measure
(it takes seconds and ~200 MB), so what only reads summaries never loads it.

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

Quality: ground truth that arrives later is joined to the logged predictions
(:func:`join_labels`, in the target's type: a CSV's ``"1"`` is the class ``1``,
``"true"`` is ``True``) and scored per task by :func:`mlops.metrics.score_labels`
(:func:`window_quality`); labels that are not of the target's type or classes are
counted and named, never a crash.

Shadow mode: a challenger served beside the champion (``mlops deploy --shadow``) logs
its answers to the same requests apart; :func:`compare_shadow` joins both logs on
``(request_id, record)`` and says how often they disagree and how each scores on the
labeled rows they share (:class:`ShadowComparison`).
"""

from __future__ import annotations

import html
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from scipy import stats

from mlops.contract import ColumnContract
from mlops.errors import DataError, MlopsError
from mlops.labels import as_target_type, describe_unusable, label_key, read_label_file
from mlops.metrics import score_labels
from mlops.prediction_log import read_prediction_log, read_refusals

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mlops.contract import ColumnContract, Contract

__all__ = [
    "ColumnDrift",
    "DriftSummary",
    "LabeledWindow",
    "RefusedTraffic",
    "ShadowComparison",
    "compare_shadow",
    "compute_drift",
    "drift_columns",
    "join_labels",
    "load_current_window",
    "log_monitoring_run",
    "refused_traffic",
    "save_summary",
    "window_quality",
]

_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
DEFAULT_SAMPLE_ROWS = 20_000
_BOUND_FACTOR = 3.0
_WASSERSTEIN = "Wasserstein distance (normed)"
_NO_VALUES = "no values on one side"


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


def drift_columns(contract: Contract) -> tuple[list[str], list[str]]:
    """The contract's features, and those compared as categories (text, bool, or a category set).

    Only model inputs are compared: identifiers, dates and the target would drift
    by construction and say nothing about the model's inputs.
    """
    features = [column.name for column in contract.features]
    categorical = [
        column.name for column in contract.features if column.type in ("str", "bool") or column.categories
    ]
    return features, categorical


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    threshold: float,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    report_path: str | Path | None = None,
    min_rows: int = 1,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
) -> DriftSummary:
    """Compare ``current`` with ``reference`` column by column with Evidently.

    ``columns`` defaults to the columns both frames share; pass the feature list
    to leave out the target, the prediction and log metadata. ``categorical`` names
    the columns compared as categories (default: those whose reference values are
    not numbers, bools included); the others are numbers. The HTML report is
    written to ``report_path`` when given, so a human can see *why* it drifted: a
    summary on top (the drifted columns, score and threshold, whether the share
    reaches the threshold), then Evidently's page with the drifted columns first.
    Above ``2 × sample_rows`` rows the report runs on a sample and the verdicts
    are confirmed on all rows (module docstring).
    """
    selected = _select_columns(reference, current, columns)
    _check_rows(reference, current, min_rows)
    categories = _categorical(reference, selected, categorical)
    large = len(reference) > 1000 and max(len(reference), len(current)) > 2 * sample_rows
    ref_report, cur_report = (
        (_sample(reference, sample_rows), _sample(current, sample_rows)) if large else (reference, current)
    )
    ref_report, cur_report = _prepared(ref_report, cur_report, selected, categories)
    unmatched = {column: _one_sided(column, ref_report[column], cur_report[column]) for column in selected}
    tested = [column for column in selected if unmatched[column] is None]
    snapshot = _run_report(ref_report[tested], cur_report[tested], categories, threshold) if tested else None
    found = dict(zip(tested, _column_drifts(snapshot.dict(), tested))) if snapshot is not None else {}
    drifts = tuple(unmatched[column] or found[column] for column in selected)
    if large:
        drifts = tuple(
            _confirm(drift, reference[drift.column], current[drift.column], sample_rows, drift.column in categories)
            for drift in drifts
        )
    drifted = tuple(drift.column for drift in drifts if drift.drifted)
    share = len(drifted) / len(drifts)
    summary = DriftSummary(
        reference_rows=len(reference),
        current_rows=len(current),
        columns=drifts,
        drifted_columns=drifted,
        drift_share=share,
        threshold=threshold,
        drift_detected=share >= threshold,
    )
    if report_path is None or snapshot is None:
        return summary
    sampled = len(ref_report) if large else None
    return replace(summary, report_path=_save_html(snapshot, summary, report_path, sampled))


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


def save_summary(summary: DriftSummary | dict[str, Any], path: str | Path) -> Path:
    """Write the summary (or a check's whole summary built on it) as JSON beside the HTML report, for dashboards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = summary.to_dict() if isinstance(summary, DriftSummary) else summary
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
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


def _categorical(reference: pd.DataFrame, selected: list[str], given: Sequence[str] | None) -> frozenset[str]:
    """The columns compared as categories: as given, else those whose values are not numbers."""
    if given is not None:
        return frozenset(given) & frozenset(selected)

    def numeric(values: pd.Series) -> bool:
        return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)

    return frozenset(column for column in selected if not numeric(reference[column]))


def _prepared(
    reference: pd.DataFrame, current: pd.DataFrame, selected: list[str], categories: frozenset[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The selected columns as Evidently must see them: numbers as floats, categories comparable."""
    pairs = {column: _comparable(reference[column], current[column], column in categories) for column in selected}
    return tuple(  # type: ignore[return-value]
        pd.DataFrame({column: pair[side].to_numpy() for column, pair in pairs.items()}) for side in (0, 1)
    )


def _comparable(reference: pd.Series, current: pd.Series, categorical: bool) -> tuple[pd.Series, pd.Series]:
    """Both sides of one column of the same kind, so equal values count as equal."""
    if not categorical:
        return _as_number(reference), _as_number(current)
    return _as_categories(reference, current)


def _as_number(values: pd.Series) -> pd.Series:
    # Evidently infers column types per frame: an int column with <= 10 distinct
    # values counts as categorical, so a float feature logged as ints would switch
    # tests. The kind is declared (contract or reference) and numbers cast to float.
    try:
        return values.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"The data has non-numeric values in the numerical feature '{values.name}': {exc}. "
            "Fix the batch, or declare the column as text (type: str) in the data contract."
        ) from None


_FAMILIES = {"string": "text", "boolean": "bool", "integer": "number", "floating": "number",
             "mixed-integer-float": "number", "decimal": "number", "empty": "empty"}


def _as_categories(reference: pd.Series, current: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Category values that compare equal on both sides; nulls stay null.

    Numbers alone, bools alone and text alone already compare as Evidently counts
    them (``1 == 1.0``). When the sides differ in kind, or a side mixes kinds (a CSV's
    ``"1"`` beside a logged ``1``, ``True`` beside ``"True"``), both are compared by
    canonical text (:func:`label_key`).
    """
    sides = [values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values
             for values in (reference, current)]
    kinds = [_FAMILIES.get(pd.api.types.infer_dtype(values, skipna=True), "mixed") for values in sides]
    if set(kinds) == {"bool", "number"}:  # a flag read as 1.0 / 0.0 on one side
        sides = [_as_flags(values) if kind == "number" else values for values, kind in zip(sides, kinds)]
    families = set(kinds) - {"empty"}
    if len(families) <= 1 and "mixed" not in families:
        return sides[0], sides[1]
    return sides[0].map(label_key, na_action="ignore"), sides[1].map(label_key, na_action="ignore")


def _as_flags(values: pd.Series) -> pd.Series:
    return values.map(lambda value: value if value not in (0, 1) else bool(value), na_action="ignore").astype(object)


def _one_sided(column: str, reference: pd.Series, current: pd.Series) -> ColumnDrift | None:
    """A verdict without a test for a column with no values on one side (Evidently refuses those)."""
    in_reference, in_current = reference.notna().any(), current.notna().any()
    if in_reference and in_current:
        return None
    drifted = bool(in_reference != in_current)
    return ColumnDrift(column=column, method=_NO_VALUES, score=float(drifted), threshold=0.5, drifted=drifted)


def _run_report(reference: pd.DataFrame, current: pd.DataFrame, categories: frozenset[str], threshold: float) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns)
    definition = {
        "numerical_columns": [column for column in columns if column not in categories],
        "categorical_columns": [column for column in columns if column in categories],
    }
    # include_tests gives Evidently's own per-column verdict; drift_share makes the
    # HTML report's dataset-level verdict agree with ours.
    report = Report([DataDriftPreset(columns=columns, drift_share=threshold)], include_tests=True)
    # A category unseen in training divides by a zero expected count in chi-square:
    # p = 0 (drift) is the intended verdict, the warning is noise.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return report.run(
            reference_data=Dataset.from_pandas(reference, data_definition=DataDefinition(**definition)),
            current_data=Dataset.from_pandas(current, data_definition=DataDefinition(**definition)),
        )


def _save_html(snapshot: Any, summary: DriftSummary, path: str | Path, sampled: int | None) -> str:
    """Evidently's page, drifted columns first, under our summary: what drifted and what follows.

    Evidently sorts its column table by drift score, highest first: for p-values that
    puts the columns that did *not* drift on top. Its page embeds its scripts and
    fonts, so the file opens offline; the summary is plain HTML, readable without them.
    """
    from evidently.core.report import Snapshot

    model = snapshot.to_snapshot_model()
    rank = {drift.column: index for index, drift in enumerate(_drifted_first(summary.columns))}
    for widget in _all_widgets(model.widgets):
        if widget.type == "big_table" and isinstance(widget.params, dict):
            rows = widget.params.get("data") or []
            rows.sort(key=lambda row: rank.get(row.get("column_name"), len(rank)))
    for widget in _all_widgets(model.tests_widgets):
        if widget.type == "test_suite" and isinstance(widget.params, dict):
            (widget.params.get("tests") or []).sort(key=lambda test: test.get("state") != "fail")
    page = Snapshot.load_model(model).get_html_str(as_iframe=False)
    block = _summary_html(summary, sampled)
    page = page.replace("<body>", "<body>" + block, 1) if "<body>" in page else block + page
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return str(path)


def _all_widgets(widgets: Sequence[Any]) -> list[Any]:
    """Every widget of a dashboard, nested groups included."""
    return [item for widget in widgets for item in (widget, *_all_widgets(widget.widgets or []))]


def _drifted_first(columns: Sequence[ColumnDrift]) -> list[ColumnDrift]:
    """Columns by how far they are past their threshold: the most drifted first, then the nearest to drifting.

    A p-value drifts below its threshold, a distance at or above it: ``score / threshold``
    (p-values) and ``threshold / score`` (distances) are below 1 exactly for the drifted ones.
    """

    def closeness(drift: ColumnDrift) -> float:
        score, threshold = max(drift.score, 1e-300), max(drift.threshold, 1e-300)
        return score / threshold if "p_value" in drift.method else threshold / score

    return sorted(columns, key=lambda drift: (not drift.drifted, closeness(drift)))


_SUMMARY_STYLE = (
    "#mlops-drift-summary{font-family:system-ui,sans-serif;margin:1rem 1.5rem;padding:1rem 1.5rem;"
    "border:1px solid #ccc;border-radius:6px;background:#fff;color:#222}"
    "#mlops-drift-summary h2{margin-top:0}#mlops-drift-summary table{border-collapse:collapse}"
    "#mlops-drift-summary td,#mlops-drift-summary th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}"
)


def _summary_html(summary: DriftSummary, sampled: int | None) -> str:
    """The block on top of the drift report: verdict, drifted columns with score and threshold, what is due."""
    e = html.escape
    verdict = "Drift detected" if summary.drift_detected else "No drift"
    rule = (
        f"Share of drifted columns {summary.drift_share:.2f} ≥ threshold {summary.threshold:.2f}: a retrain is due."
        if summary.drift_detected
        else f"Share of drifted columns {summary.drift_share:.2f} < threshold {summary.threshold:.2f}: "
        "no retrain is due on drift."
    )
    ranked = _drifted_first(summary.columns)
    drifted = [drift for drift in ranked if drift.drifted]
    steady = [drift for drift in ranked if not drift.drifted]
    lines = [
        f'<section id="mlops-drift-summary"><style>{_SUMMARY_STYLE}</style>',
        f"<h2>{verdict}: {len(drifted)} of {len(ranked)} columns drifted</h2>",
        f"<p><b>{e(rule)}</b></p>",
        f"<p>Reference {summary.reference_rows} rows, current {summary.current_rows} rows."
        + (f" The report below ran on a sample of {sampled} rows per side; the verdicts here are on all rows."
           if sampled else "")
        + "</p>",
    ]
    if drifted:
        lines += ["<p>Drifted columns, most drifted first:</p>", _drift_table(drifted)]
    if steady:
        lines += [f"<details><summary>{len(steady)} column(s) did not drift</summary>", _drift_table(steady),
                  "</details>"]
    lines.append("</section>")
    return "\n".join(lines) + "\n"


def _drift_table(columns: Sequence[ColumnDrift]) -> str:
    def rule(drift: ColumnDrift) -> str:
        return "drifts below" if "p_value" in drift.method else "drifts at or above"

    header = "".join(f"<th>{name}</th>" for name in ("Column", "Test", "Score", "Threshold"))
    rows = "".join(
        f"<tr><td>{html.escape(drift.column)}</td><td>{html.escape(drift.method)}</td>"
        f"<td>{drift.score:.4g}</td><td>{drift.threshold:.4g} ({rule(drift)})</td></tr>"
        for drift in columns
    )
    return f"<table><tr>{header}</tr>{rows}</table>"


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


def _confirm(
    screened: ColumnDrift, reference: pd.Series, current: pd.Series, sample_rows: int, categorical: bool
) -> ColumnDrift:
    """Keep a sampled Wasserstein verdict only when it cannot flip on all rows; else recompute.

    Tries the report's sample, then one ten times larger, before all rows.
    """
    reference, current = _comparable(reference, current, categorical)
    if screened.method == _WASSERSTEIN and not categorical:
        sigma = max(float(np.nanstd(reference.to_numpy(dtype="float64"))), 0.001)
        for rows in (sample_rows, 10 * sample_rows):
            if 2 * rows >= max(len(reference), len(current)):
                break
            score, margin = _sampled_wasserstein(_sample(reference, rows), _sample(current, rows), sigma)
            if abs(score - screened.threshold) > margin:
                return replace(screened, score=score, drifted=score >= screened.threshold, exact=False)
    return _exact_drift(screened, reference, current, categorical)


def _sampled_wasserstein(ref_sample: pd.Series, cur_sample: pd.Series, sigma: float) -> tuple[float, float]:
    """The normed distance on the samples (σ from all rows) and the bound on its error."""
    ref, cur = (np.sort(s.dropna().to_numpy(dtype="float64")) for s in (ref_sample, cur_sample))
    score = float(stats.wasserstein_distance(ref, cur)) / sigma
    margin = _BOUND_FACTOR * (_spread(ref) / np.sqrt(len(ref)) + _spread(cur) / np.sqrt(len(cur))) / sigma
    return score, float(margin)


def _spread(sorted_values: Any) -> float:
    """J(F̂) = ∫ √(F̂(1 − F̂)) dx of the empirical distribution of ``sorted_values``."""
    n = len(sorted_values)
    if n < 2:
        return 0.0
    cdf = np.arange(1, n) / n
    return float(np.sum(np.sqrt(cdf * (1 - cdf)) * np.diff(sorted_values)))


def _exact_drift(screened: ColumnDrift, reference: pd.Series, current: pd.Series, categorical: bool) -> ColumnDrift:
    """Evidently's own default stat test for the column, on all rows (already of its kind)."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    one_sided = _one_sided(screened.column, reference, current)
    if one_sided is not None:
        return one_sided
    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    reference, current = reference.dropna(), current.dropna()
    # Evidently picks the test per column from row and distinct-value counts.
    test = get_stattest(reference, current, kind, None)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = test(reference, current, kind, None)
    return replace(
        screened,
        method=test.display_name,
        score=float(result.drift_score),
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
        exact=True,
    )


@dataclass(frozen=True)
class LabeledWindow:
    """The logged predictions that have a usable ground-truth label, and the labels left out.

    ``rows`` are the window's rows with a ``label`` column, label and prediction in the
    target's type. ``invalid`` labels (empty, not of the target's type, not one of its
    classes; or a logged prediction that is not) and ``unmatched`` ones (no logged
    prediction has that request_id and record) are left out, and ``problems`` says which.
    """

    rows: pd.DataFrame = field(compare=False, repr=False)
    labels: int
    unmatched: int = 0
    invalid: int = 0
    problems: tuple[str, ...] = ()

    @property
    def labeled_rows(self) -> int:
        return len(self.rows)

    def to_dict(self) -> dict[str, Any]:
        """The counts and problems (not the rows), for the saved summary."""
        return {
            "labels": self.labels,
            "labeled_rows": self.labeled_rows,
            "unmatched": self.unmatched,
            "invalid": self.invalid,
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        """One line for the log, then the problems."""
        line = f"{self.labeled_rows} of {self.labels} label(s) joined to logged predictions"
        left = [f"{count} {what}" for count, what in
                ((self.invalid, "unusable"), (self.unmatched, "for predictions outside the window")) if count]
        line += f" ({', '.join(left)})." if left else "."
        return "\n".join([line, *self.problems])


def join_labels(
    window: pd.DataFrame, labels_path: str | Path | pd.DataFrame, target: ColumnContract | None = None
) -> LabeledWindow:
    """The logged predictions that have a ground-truth label, label and prediction in the target's type.

    Labels file (CSV or Parquet): ``request_id``, ``label`` and optionally ``record``
    (the record's position in its request, default 0), one row per labeled
    prediction; a later row for the same prediction replaces an earlier one. A CSV is
    read as text and each label converted to ``target``'s type and classes (the data
    contract's target column): ``"2"`` is the class ``2``, ``"true"`` is ``True``. Without
    ``target`` the labels take the type of the logged predictions. A frame (the label
    store's :func:`mlops.labels.read_labels`) is used as given, in arrival order.
    """
    if isinstance(labels_path, (str, Path)):
        labels = _read_labels(labels_path)
    else:
        labels = labels_path.astype({"request_id": str, "record": "int64"})[["request_id", "record", "label"]]
    problems: list[str] = []
    labels, duplicated = _latest_labels(labels)
    if duplicated:
        problems.append(f"{duplicated} prediction(s) labeled more than once: the last label is used.")
    keyed = window.assign(request_id=window["request_id"].astype(str), record=window["record"].astype("int64"))
    joined = keyed.merge(labels, on=["request_id", "record"], how="inner", suffixes=("_input", ""))
    unmatched = len(labels) - len(joined)
    # A labels file is meant for this window; the label store holds every label there is.
    if unmatched and isinstance(labels_path, (str, Path)):
        problems.append(f"{unmatched} label(s) match no logged prediction (request_id, record) in the window.")
    target = target or _target_like(joined["prediction"])
    truth, truth_ok = as_target_type(joined["label"], target)
    predicted, predicted_ok = as_target_type(joined["prediction"], target)
    problems += describe_unusable(joined["label"], truth_ok, target, "label")
    problems += describe_unusable(joined["prediction"], predicted_ok, target, "logged prediction")
    usable = [a and b for a, b in zip(truth_ok, predicted_ok)]
    kept = joined[usable].reset_index(drop=True)  # then the typed values: no None to turn ints into floats
    rows = kept.assign(label=[v for v, ok in zip(truth, usable) if ok],
                       prediction=[v for v, ok in zip(predicted, usable) if ok])
    return LabeledWindow(
        rows, labels=len(labels) + duplicated, unmatched=unmatched, invalid=len(joined) - len(rows),
        problems=tuple(problems),
    )


def window_quality(
    labeled: LabeledWindow | pd.DataFrame,
    task: str,
    *,
    classes: Sequence[Any] | None = None,
    positive: Any = None,
) -> dict[str, float]:
    """Quality of the served predictions on labeled rows, with the task's metrics.

    Classification: accuracy, balanced accuracy, F1, precision and recall (binary:
    of ``positive``, by default the last sorted class; multi-class: macro); regression:
    rmse, mae, r2 (:func:`mlops.metrics.score_labels`). ``classes`` (the target's)
    keep a window that holds one class binary. Labels and predictions are compared
    by value however they were read (``"1"``, ``1`` and ``1.0`` are one class); a
    metric this window cannot give (r2 on one row) is left out.
    """
    rows = labeled.rows if isinstance(labeled, LabeledWindow) else labeled
    if rows.empty:
        return {}
    with warnings.catch_warnings():  # a small window lacks some classes: scikit-learn says so for each metric
        warnings.simplefilter("ignore", UserWarning)
        scores = _scores(rows, task, classes, positive)
    return {name: float(value) for name, value in scores.items() if math.isfinite(value)}


@dataclass(frozen=True)
class ShadowComparison:
    """The champion and a shadow version on the same requests: how often they disagree, and who is right.

    ``compared_rows`` are the window's records both answered (joined on ``request_id`` and
    ``record``); ``disagreement`` is the share of them answered differently (a regressor:
    by more than ``tolerance``, relative, with ``mean_abs_difference`` beside it).
    ``champion_quality`` and ``shadow_quality`` are measured on the same ``labeled_rows``,
    the compared rows that have a label, so the two are comparable.
    """

    shadow_version: str
    champion_version: str
    compared_rows: int
    disagreement: float
    labeled_rows: int = 0
    champion_quality: dict[str, float] = field(default_factory=dict)
    shadow_quality: dict[str, float] = field(default_factory=dict)
    mean_abs_difference: float | None = None
    tolerance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for the monitoring run: ``shadow_disagreement``, ``shadow_<m>`` and ``champion_<m>`` on shared rows."""
        values = {
            "shadow_disagreement": self.disagreement,
            "shadow_compared_rows": float(self.compared_rows),
            "shadow_labeled_rows": float(self.labeled_rows),
        }
        if self.mean_abs_difference is not None:
            values["shadow_mean_abs_difference"] = self.mean_abs_difference
        values |= {f"shadow_{name}": value for name, value in self.shadow_quality.items()}
        values |= {f"champion_{name}": value for name, value in self.champion_quality.items()}
        return values

    def summary(self) -> str:
        """A few readable lines for the CLI and the logs."""
        gap = f", mean |difference| {self.mean_abs_difference:.4g}" if self.mean_abs_difference is not None else ""
        lines = [
            f"shadow v{self.shadow_version} vs champion v{self.champion_version}: {self.compared_rows} records compared, "
            f"disagreement {self.disagreement:.1%}{gap}."
        ]
        if self.labeled_rows:
            shown = [
                f"{name} {self.champion_quality[name]:.4f} → {self.shadow_quality[name]:.4f}"
                for name in self.champion_quality
                if name in self.shadow_quality
            ]
            lines.append(f"On {self.labeled_rows} labeled records (champion → shadow): " + ", ".join(shown) + ".")
        else:
            lines.append("No labeled records among them: quality not compared.")
        return "\n".join(lines)


def compare_shadow(
    champion_window: pd.DataFrame,
    shadow_log: pd.DataFrame,
    labels: pd.DataFrame | None = None,
    *,
    task: str,
    classes: Sequence[Any] | None = None,
    positive: Any = None,
    tolerance: float = 1e-3,
) -> ShadowComparison | None:
    """Compare the shadow's logged answers with the champion's on the requests of the window.

    ``champion_window`` and ``shadow_log`` are prediction logs (:func:`read_prediction_log`
    frames with ``request_id``, ``record``, ``model_version``, ``prediction``); they are
    joined on ``(request_id, record)``. The newest shadow version in the log is compared
    with the newest champion version that answered the same requests (an earlier
    shadow's, or a swapped-out champion's, answers would mix two models). ``labels`` are
    labeled window rows (``request_id``, ``record``, ``label``; e.g. :attr:`LabeledWindow.rows`):
    both versions are scored on the compared rows that have one, with :func:`window_quality`.
    Classes are compared by value however they were read (``1``, ``"1"``); regression
    answers differ when ``|a - b| > tolerance × max(|a|, |b|)``. None when no request of
    the window reached the shadow.
    """
    keys = ["request_id", "record"]
    needed = [*keys, "model_version", "prediction"]
    if shadow_log.empty or any(column not in frame for frame in (champion_window, shadow_log) for column in needed):
        return None
    shadow = _keyed(shadow_log[needed])
    version = shadow["model_version"].iloc[-1]  # the log is in time order: the shadow running last
    shadow = shadow[shadow["model_version"] == version].drop_duplicates(keys, keep="last")
    champion = _keyed(champion_window[needed])
    pairs = champion.merge(shadow, on=keys, suffixes=("_champion", "_shadow"))
    pairs = pairs[pairs["model_version_champion"] != version]
    if pairs.empty:
        return None
    serving = pairs["model_version_champion"].iloc[-1]
    pairs = pairs[pairs["model_version_champion"] == serving].reset_index(drop=True)
    differs, gap = _differences(pairs["prediction_champion"], pairs["prediction_shadow"], task, tolerance)
    labeled, champion_quality, shadow_quality = 0, {}, {}
    if labels is not None and not labels.empty:
        truth = _keyed(labels[[*keys, "label"]]).drop_duplicates(keys, keep="last")
        shared = pairs.merge(truth, on=keys)
        labeled = len(shared)
        if labeled:
            score = lambda side: window_quality(  # noqa: E731
                shared.assign(prediction=shared[f"prediction_{side}"])[["label", "prediction"]],
                task, classes=classes, positive=positive,
            )  # fmt: skip
            champion_quality, shadow_quality = score("champion"), score("shadow")
    return ShadowComparison(
        shadow_version=str(version),
        champion_version=str(serving),
        compared_rows=len(pairs),
        disagreement=float(differs),
        labeled_rows=labeled,
        champion_quality=champion_quality,
        shadow_quality=shadow_quality,
        mean_abs_difference=gap,
        tolerance=tolerance if task == "regression" else None,
    )


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """Join keys as the label store types them: text request ids, integer records."""
    typed = {"request_id": str, "record": "int64"}
    if "model_version" in frame:
        typed["model_version"] = str
    return frame.astype(typed)


def _differences(champion: pd.Series, shadow: pd.Series, task: str, tolerance: float) -> tuple[float, float | None]:
    """The share of answers that differ, and (regression) the mean absolute difference."""
    if task == "regression":
        a, b = np.asarray(_numbers(champion)), np.asarray(_numbers(shadow))
        both = ~(np.isnan(a) | np.isnan(b))
        a, b = a[both], b[both]
        if not len(a):
            return 0.0, None
        apart = np.abs(a - b) > tolerance * np.maximum(np.abs(a), np.abs(b))
        return float(apart.mean()), float(np.abs(a - b).mean())
    same = [label_key(x) == label_key(y) for x, y in zip(champion, shadow)]
    return (1.0 - sum(same) / len(same)) if same else 0.0, None


def _scores(rows: pd.DataFrame, task: str, classes: Sequence[Any] | None, positive: Any) -> dict[str, float]:
    """score_labels on the rows with both values: numbers for regression, canonical class keys otherwise."""
    if task == "regression":
        pairs = [(a, b) for a, b in zip(_numbers(rows["label"]), _numbers(rows["prediction"]))
                 if not (math.isnan(a) or math.isnan(b))]
        return score_labels([a for a, _ in pairs], [b for _, b in pairs], task) if pairs else {}
    keyed = zip(map(label_key, rows["label"]), map(label_key, rows["prediction"]))
    classed: list[tuple[str, str]] = [(a, b) for a, b in keyed if a is not None and b is not None]
    if not classed:
        return {}
    known = [label_key(c) for c in classes] if classes else [key for pair in classed for key in pair]
    keys = sorted({key for key in known if key is not None}, key=_key_order)
    truth, predicted = [a for a, _ in classed], [b for _, b in classed]
    return score_labels(truth, predicted, task, classes=keys, positive=label_key(positive))


def _read_labels(path: str | Path) -> pd.DataFrame:
    """The labels file with request ids and labels as written (a CSV is read as text)."""
    labels = read_label_file(path)
    records = pd.to_numeric(labels["record"], errors="coerce") if "record" in labels.columns else 0
    labels = labels.assign(request_id=labels["request_id"].astype(str).str.strip(), record=records)
    bad = labels["record"].isna() | (labels["record"] % 1 != 0)
    if bad.any():
        raise DataError(
            f"Labels file {path}: column record must hold whole numbers (the record's position in its "
            f"request); {int(bad.sum())} row(s) do not, the first on line {int(bad.to_numpy().argmax()) + 2}. "
            "Fix or remove them."
        )
    return labels.astype({"record": "int64"})[["request_id", "record", "label"]]


def _latest_labels(labels: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    latest = labels.drop_duplicates(["request_id", "record"], keep="last")
    return latest, len(labels) - len(latest)


def _target_like(predictions: pd.Series) -> ColumnContract:
    """A stand-in target column typed like the logged predictions (no contract given)."""
    kind = pd.api.types.infer_dtype(predictions, skipna=True)
    types = {"boolean": "bool", "integer": "int", "floating": "float", "mixed-integer-float": "float"}
    return ColumnContract(name="label", type=types.get(kind, "str"))


def _numbers(values: pd.Series) -> list[float]:
    return pd.to_numeric(values, errors="coerce").astype("float64").tolist()


def _key_order(key: str) -> tuple[int, float, str]:
    """Numbers in numeric order (9 before 10), then text: the order scikit-learn sorts classes in."""
    try:
        return (0, float(key), "")
    except ValueError:
        return (1, 0.0, key)


# --- Refused at serving ----------------------------------------------------------------


@dataclass(frozen=True)
class RefusedTraffic:
    """The scoring requests the served contract refused (422) while the window was logged.

    They never reach the prediction log, so drift and the window's contract check cannot
    see them: a unit change that makes half the traffic out of range leaves a clean window.
    ``by_column`` counts each column a refusal named (most refused first); ``share`` is the
    refused part of the requests, answered (the window's) plus refused.
    """

    requests: int
    by_column: dict[str, int]
    since: str | None
    answered_requests: int

    @property
    def share(self) -> float:
        total = self.requests + self.answered_requests
        return self.requests / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": self.share}

    def summary(self) -> str:
        since = f" since {self.since[:19].replace('T', ' ')} UTC" if self.since else ""
        if not self.requests:
            return f"no request refused at serving{since}"
        columns = ", ".join(f"{name} {count}" for name, count in list(self.by_column.items())[:5])
        more = f", +{len(self.by_column) - 5} more columns" if len(self.by_column) > 5 else ""
        named = f": {columns}{more}" if columns else ""
        return f"{self.requests} requests refused at serving (422, {self.share:.0%} of the traffic){since}{named}"


def refused_traffic(folder: str | Path, window: pd.DataFrame) -> RefusedTraffic:
    """The refusals logged in ``folder`` (:class:`~mlops.prediction_log.RefusalLog`) since the window's first prediction."""
    since = str(window["timestamp"].min()) if "timestamp" in window and len(window) else None
    refusals = read_refusals(folder, since)
    counts: dict[str, int] = {}
    for entry in refusals:
        for column in entry.get("columns") or []:
            counts[str(column)] = counts.get(str(column), 0) + 1
    answered = int(window["request_id"].nunique()) if "request_id" in window else len(window)
    by_column = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return RefusedTraffic(len(refusals), by_column, since, answered)


def log_monitoring_run(
    summary: DriftSummary,
    *,
    experiment_id: str,
    model_name: str,
    model_version: str | None,
    quality: dict[str, float] | None = None,
    labeled_rows: int | None = None,
    invalid_labels: int = 0,
    artifacts: Sequence[str | Path] = (),
    tags: dict[str, str] | None = None,
    shadow: ShadowComparison | None = None,
    refused: RefusedTraffic | None = None,
) -> str:
    """Record one monitoring check as an MLflow run linked to the model version it watched.

    ``quality`` is logged as ``window_<metric>`` beside ``window_labeled_rows``, the
    number of labeled rows it was computed on (a score on 5 rows is not one on 5,000),
    and ``window_invalid_labels``, the labels left out. A ``shadow`` comparison adds
    :meth:`ShadowComparison.metrics` and the tag ``mlops.shadow.version``; ``refused`` traffic
    adds ``refused_requests`` and ``refused_share`` (and ``refused/summary.json`` per column).
    """
    run_tags = {
        "mlops.kind": "monitoring",
        "mlops.model_name": model_name,
        "mlops.model_version": model_version or "",
        "mlops.drift_detected": str(summary.drift_detected).lower(),
        **(tags or {}),
    }
    if shadow is not None:
        run_tags |= {"mlops.shadow.version": shadow.shadow_version, "mlops.shadow.champion_version": shadow.champion_version}
    drift = f"drift {summary.drift_share:.0%}" if summary.drift_detected else f"no drift ({summary.drift_share:.0%})"
    run_name = " · ".join(part for part in ("check", f"v{model_version}" if model_version else "", drift) if part)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        mlflow.log_params({"drift_share_threshold": summary.threshold, "window_rows": summary.current_rows})
        mlflow.log_metrics({"drift_share": summary.drift_share, "drifted_columns": len(summary.drifted_columns)})
        mlflow.log_metrics({f"window_{name}": value for name, value in (quality or {}).items()})
        if labeled_rows is not None:
            mlflow.log_metrics({"window_labeled_rows": labeled_rows, "window_invalid_labels": invalid_labels})
        if shadow is not None:
            mlflow.log_metrics(shadow.metrics())
            mlflow.log_dict(shadow.to_dict(), "shadow/comparison.json")
        if refused is not None:
            mlflow.log_metrics({"refused_requests": refused.requests, "refused_share": refused.share})
            mlflow.log_dict(refused.to_dict(), "refused/summary.json")
        mlflow.log_dict(summary.to_dict(), "drift/summary.json")
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="drift")
    return run.info.run_id
