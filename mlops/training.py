"""Train, search and evaluate scikit-learn candidates, reproducibly.

The same data, config and seed give the same split, the same model and the same
metrics: the split is a hash of each row's content (the same row always lands on
the same side, whatever the file's order), the cross-validation folds and the
estimators are seeded.

Candidates come from the config (``model.candidates``) or from Python::

    from sklearn.ensemble import GradientBoostingClassifier
    candidates = [Candidate("gbm", GradientBoostingClassifier(random_state=0), {"n_estimators": [50, 100]})]
    result = search_candidates(split, settings.model, candidates)
    result.best.metrics["roc_auc"]

A bare estimator gets the preprocessing built by :func:`build_preprocessor` in front
of it; a :class:`~sklearn.pipeline.Pipeline` is used as given.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from mlops.config import ModelConfig

__all__ = [
    "Candidate",
    "DataSplit",
    "SearchResult",
    "TrainedModel",
    "Trial",
    "build_pipeline",
    "build_preprocessor",
    "candidates_from_config",
    "evaluate",
    "higher_is_better",
    "infer_columns",
    "row_hashes",
    "search_candidates",
    "split_holdout",
    "split_manifest",
    "train_model",
]

# Error metrics: lower is better. Every other metric: higher is better.
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
# The scikit-learn scorer behind each metric name, for cross-validation.
SCORERS = {
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "f1": "f1",
    "precision": "precision",
    "recall": "recall",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}
_HASH_BUCKETS = 10_000


@dataclass(frozen=True)
class DataSplit:
    """Features and target for training and for the held-out evaluation."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_holdout: pd.DataFrame
    y_holdout: pd.Series

    @property
    def feature_names(self) -> list[str]:
        return list(self.x_train.columns)


@dataclass(frozen=True)
class Candidate:
    """An estimator (or a whole pipeline) and the hyperparameter values to try."""

    name: str
    estimator: Any
    space: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    """One point of a candidate's search: its parameters and cross-validated score."""

    candidate: str
    params: dict[str, Any]
    cv_score: float
    cv_std: float


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with its holdout metrics and the parameters that made it."""

    pipeline: Pipeline
    metrics: dict[str, float]
    params: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    """Every trial of every candidate, and the best candidate refitted and scored on the holdout."""

    best: TrainedModel
    trials: tuple[Trial, ...]
    metric: str


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: accuracy-like up, error-like (rmse, mae) down."""
    return metric not in LOWER_IS_BETTER


# --- Split -----------------------------------------------------------------------------


def row_hashes(frame: pd.DataFrame, seed: int) -> pd.Series:
    """A seeded 64-bit hash of each row's content, independent of row and column order."""
    import hashlib

    import numpy as np
    import pandas as pd

    ordered = frame[sorted(frame.columns, key=str)]
    content = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    # pandas hashes numbers without a key, so the seed is mixed in and the result re-hashed.
    salt = np.uint64(int.from_bytes(hashlib.sha256(f"mlops-split-{seed}".encode()).digest()[:8], "little"))
    return pd.Series(pd.util.hash_array(content ^ salt), index=frame.index)


def split_holdout(
    frame: pd.DataFrame, target: str, test_size: float, seed: int, task: str = "classification"
) -> DataSplit:
    """Split by row hash: a row is held out when its hash falls in the first ``test_size`` of buckets.

    Unlike a shuffled split, adding rows or reordering the file never moves an
    existing row to the other side, and identical rows never straddle the split.
    """
    if target not in frame.columns:
        raise DataError(f"Target column '{target}' is not in the data. Set data.target in the config.")
    labels = frame[target]
    if task == "classification" and labels.nunique() < 2:
        raise DataError(f"Target column '{target}' has a single class; a classifier needs at least two.")
    holdout = (row_hashes(frame, seed) % _HASH_BUCKETS) < round(test_size * _HASH_BUCKETS)
    if holdout.all() or not holdout.any():
        raise DataError(f"The hash split left one side empty ({len(frame)} rows). Use more rows or change test_size.")
    features = frame.drop(columns=[target])
    return DataSplit(features[~holdout], labels[~holdout], features[holdout], labels[holdout])


def split_manifest(frame: pd.DataFrame, split: DataSplit, seed: int) -> pd.DataFrame:
    """Which row went where: row number, row hash and side, to log with the run."""
    import pandas as pd

    hashes = row_hashes(frame, seed)
    side = pd.Series("train", index=frame.index).where(~frame.index.isin(split.x_holdout.index), "holdout")
    return pd.DataFrame({"row": range(len(frame)), "row_hash": hashes.map("{:016x}".format), "split": side})


# --- Candidates and preprocessing ------------------------------------------------------

_BUILTIN = {
    ("classification", "logistic_regression"): ("sklearn.linear_model:LogisticRegression", {"max_iter": 1000}),
    ("classification", "random_forest"): ("sklearn.ensemble:RandomForestClassifier", {"n_estimators": 100}),
    ("regression", "ridge"): ("sklearn.linear_model:Ridge", {}),
    ("regression", "random_forest"): ("sklearn.ensemble:RandomForestRegressor", {"n_estimators": 100}),
}
# The default search per built-in: small, so `mlops train` stays around a second.
_DEFAULT_SPACES = {
    "logistic_regression": {"C": [0.1, 1.0, 10.0]},
    "random_forest": {"max_depth": [None, 8]},
    "ridge": {"alpha": [0.1, 1.0, 10.0]},
}


def candidates_from_config(config: ModelConfig) -> list[Candidate]:
    """The configured candidates, or the single ``estimator`` with its default space."""
    if not config.candidates:
        name = config.estimator_name
        return [Candidate(name, _make_estimator(name, {}, config), dict(_DEFAULT_SPACES.get(name, {})))]
    return [
        Candidate(spec.name, _make_estimator(spec.estimator, spec.params, config), dict(spec.space))
        for spec in config.candidates
    ]


def _make_estimator(spec: str, params: dict[str, Any], config: ModelConfig) -> Any:
    """A built-in name or ``module:Class`` path; seeded when the estimator takes a seed."""
    path, defaults = _BUILTIN.get((config.task, spec), (spec, {}))
    if ":" not in path:
        builtins = sorted(name for task, name in _BUILTIN if task == config.task)
        raise ConfigError(f"Unknown estimator '{spec}' for {config.task}. Use one of {builtins} or 'module:Class'.")
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        estimator = cls(**{**defaults, **params})
    except (ImportError, AttributeError, TypeError) as exc:
        raise ConfigError(f"Cannot build estimator '{spec}': {exc}. Check model.candidates in the config.") from None
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=config.seed)
    return estimator


def infer_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns, from the dtypes (until a data contract declares them)."""
    import pandas as pd

    types = pd.api.types
    numeric = [c for c in frame.columns if types.is_numeric_dtype(frame[c]) and not types.is_bool_dtype(frame[c])]
    return numeric, [c for c in frame.columns if c not in numeric]


def build_preprocessor(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Impute and scale numeric columns; impute and one-hot encode categorical ones."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers = []
    if numeric:
        transformers.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        categorical_steps = make_pipeline(SimpleImputer(strategy="most_frequent"), encoder)
        transformers.append(("categorical", categorical_steps, categorical))
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def build_pipeline(
    estimator: Any, features: pd.DataFrame, columns: tuple[list[str], list[str]] | None = None
) -> Pipeline:
    """The estimator behind preprocessing for ``columns`` (numeric, categorical); a Pipeline is kept as is.

    ``columns`` default to :func:`infer_columns`; a data contract declaring column types passes its own.
    """
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return clone(estimator)
    preprocessor = build_preprocessor(*(columns or infer_columns(features)))
    return Pipeline([("preprocess", preprocessor), ("model", clone(estimator))])


# --- Search and evaluation -------------------------------------------------------------


def search_candidates(
    split: DataSplit,
    config: ModelConfig,
    candidates: list[Candidate] | None = None,
    columns: tuple[list[str], list[str]] | None = None,
) -> SearchResult:
    """Search each candidate's space by cross-validation on the training part.

    The best candidate (by mean cross-validated primary metric, never by the holdout,
    which stays for the gate) is refitted on the whole training part and scored on
    the holdout. ``columns`` (numeric, categorical) default to the dtypes' verdict.
    """
    candidates = candidates if candidates is not None else candidates_from_config(config)
    if not candidates:
        raise ConfigError("No candidates to train. Add model.candidates to the config or pass some.")
    trials: list[Trial] = []
    fitted = []
    for candidate in candidates:
        search = _search(candidate, split, config, columns)
        trials += _trials(candidate.name, search)
        fitted.append((search.best_score_, candidate, search))
    _, candidate, search = max(fitted, key=lambda item: item[0])
    params = _params(candidate.name, search.best_estimator_, split, config)
    metrics = evaluate(search.best_estimator_, split.x_holdout, split.y_holdout, config.task)
    best = TrainedModel(search.best_estimator_, metrics, params)
    return SearchResult(best, tuple(trials), config.metric)


def _search(candidate: Candidate, split: DataSplit, config: ModelConfig, columns) -> Any:
    from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, StratifiedKFold

    pipeline = build_pipeline(candidate.estimator, split.x_train, columns)
    space = {_step_param(pipeline, name): values for name, values in candidate.space.items()}
    folds = StratifiedKFold if config.task == "classification" else KFold
    common = {
        "scoring": SCORERS[config.metric],
        "cv": folds(config.search.cv_folds, shuffle=True, random_state=config.seed),
        "n_jobs": config.search.n_jobs,
        "error_score": "raise",
    }
    if config.search.kind == "random" and space:
        search = RandomizedSearchCV(pipeline, space, n_iter=config.search.n_iter, random_state=config.seed, **common)
    else:
        search = GridSearchCV(pipeline, space or [{}], **common)
    try:
        return search.fit(split.x_train, split.y_train)
    except ValueError as exc:
        raise ConfigError(f"Candidate '{candidate.name}' cannot be fitted: {exc}") from None


def _step_param(pipeline: Pipeline, name: str) -> str:
    # Spaces name the estimator's own parameters; a user's pipeline names its steps itself.
    return name if "__" in name or "model" not in pipeline.named_steps else f"model__{name}"


def _trials(candidate: str, search: Any) -> list[Trial]:
    results = search.cv_results_
    sign = -1.0 if str(search.scoring).startswith("neg_") else 1.0
    return [
        Trial(candidate, dict(params), sign * float(mean), float(std))
        for params, mean, std in zip(results["params"], results["mean_test_score"], results["std_test_score"])
    ]


def _params(candidate: str, pipeline: Pipeline, split: DataSplit, config: ModelConfig) -> dict[str, Any]:
    """Flat, readable run params: the candidate, the split, and the final estimator's settings."""
    estimator = pipeline.steps[-1][1]
    return {
        "estimator": candidate,
        "estimator_class": type(estimator).__name__,
        "task": config.task,
        "seed": config.seed,
        "test_size": config.test_size,
        "train_rows": len(split.x_train),
        "holdout_rows": len(split.x_holdout),
        **{f"model.{name}": value for name, value in estimator.get_params().items()},
    }


def evaluate(pipeline: Any, features: pd.DataFrame, labels: pd.Series, task: str = "classification") -> dict[str, float]:
    """Holdout metrics under stable names, so runs compare in the MLflow UI."""
    from sklearn import metrics

    predicted = pipeline.predict(features)
    if task == "regression":
        return {
            "rmse": math.sqrt(float(metrics.mean_squared_error(labels, predicted))),
            "mae": float(metrics.mean_absolute_error(labels, predicted)),
            "r2": float(metrics.r2_score(labels, predicted)),
        }
    scores = pipeline.predict_proba(features)[:, 1]
    return {
        "accuracy": float(metrics.accuracy_score(labels, predicted)),
        "f1": float(metrics.f1_score(labels, predicted)),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted)),
        "roc_auc": float(metrics.roc_auc_score(labels, scores)),
    }


def train_model(split: DataSplit, config: ModelConfig) -> TrainedModel:
    """Fit the configured candidates' best pipeline and score it on the holdout (no trials kept)."""
    return search_candidates(split, config).best
