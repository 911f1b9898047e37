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

import hashlib
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import has_fit_parameter

from mlops.config import BUILTIN_ESTIMATORS, estimator_class
from mlops.errors import ConfigError, DataError
from mlops.metrics import LOWER_IS_BETTER, higher_is_better, score_model, scorer

if TYPE_CHECKING:
    from mlops.config import ModelConfig
    from mlops.contract import Contract

__all__ = [
    "Candidate",
    "CandidateSearch",
    "DataSplit",
    "SearchResult",
    "TrainedModel",
    "Trial",
    "build_pipeline",
    "build_preprocessor",
    "candidates_from_config",
    "candidates_to_search",
    "check_contract_fits",
    "check_trainable",
    "contract_columns",
    "evaluate",
    "feature_frame",
    "higher_is_better",
    "infer_columns",
    "pick_best",
    "row_hashes",
    "search_candidate",
    "search_candidates",
    "split_holdout",
    "split_for_contract",
    "split_manifest",
    "train_model",
]

_HASH_BUCKETS = 10_000
# Estimators that split on values: an ordinal code per category is enough, and cheaper than one-hot.
_TREE_MODULES = ("sklearn.ensemble", "sklearn.tree", "xgboost", "lightgbm", "catboost")


@dataclass(frozen=True)
class DataSplit:
    """Features and target for training and for the held-out evaluation."""

    x_train: pd.DataFrame
    y_train: pd.Series
    x_holdout: pd.DataFrame
    y_holdout: pd.Series
    # Per training row (aligned with x_train), e.g. recent labeled rows counting more; None: all 1.
    w_train: pd.Series | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.x_train.columns)

    def weighted(self, weights: pd.Series) -> DataSplit:
        """This split with ``weights`` (indexed like the frame it was split from) on its training rows."""
        return replace(self, w_train=weights.loc[self.x_train.index].astype(float))


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
    # The flat run params, named as the parent run's (``estimator``, ``model.C``, ...), so
    # parent and trials line up in MLflow's Compare view.
    run_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with its holdout metrics and the parameters that made it."""

    pipeline: Pipeline
    metrics: dict[str, float]
    params: dict[str, Any]
    # The winning trial's cross-validated score (``cv_<metric>``, ``cv_<metric>_std``), logged on
    # the parent under the trials' keys.
    cv_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateSearch:
    """One candidate's search (:func:`search_candidate`): its trials, the best of them and its refitted pipeline."""

    candidate: str
    trials: tuple[Trial, ...]
    best_trial: Trial
    # The search's ``best_score_``: the mean cross-validated score as scikit-learn ranks it (higher is better).
    best_score: float
    pipeline: Pipeline


@dataclass(frozen=True)
class SearchResult:
    """Every trial of every candidate, and the best candidate refitted and scored on the holdout."""

    best: TrainedModel
    trials: tuple[Trial, ...]
    metric: str


# --- Split -----------------------------------------------------------------------------


def row_hashes(frame: pd.DataFrame, seed: int) -> pd.Series:
    """A seeded 64-bit hash of each row's content, independent of row and column order."""
    ordered = frame[sorted(frame.columns, key=str)]
    content = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    # pandas hashes numbers without a key, so the seed is mixed in and the result re-hashed.
    salt = np.uint64(int.from_bytes(hashlib.sha256(f"mlops-split-{seed}".encode()).digest()[:8], "little"))
    return pd.Series(pd.util.hash_array(content ^ salt), index=frame.index)


def split_holdout(
    frame: pd.DataFrame, target: str, test_size: float, seed: int, task: str = "classification", min_train: int = 2
) -> DataSplit:
    """Split by row hash: a row is held out when its hash falls in the first ``test_size`` of buckets.

    Unlike a shuffled split, adding rows or reordering the file never moves an
    existing row to the other side, and identical rows never straddle the split.
    For classification the split is stratified: each class is split on its own, and
    keeps at least one holdout row and ``min_train`` training rows (the folds of the
    search), or the class is named in a :class:`DataError`. Rows without a target
    value are not used.
    """
    if target not in frame.columns:
        raise DataError(f"Target column '{target}' is not in the data. Set data.target in the config.")
    frame = frame[frame[target].notna()]
    labels = frame[target]
    if task == "classification":
        holdout = _stratified_holdout(frame, labels, test_size, seed, min_train)
    else:
        holdout = (row_hashes(frame, seed) % _HASH_BUCKETS) < round(test_size * _HASH_BUCKETS)
    if holdout.all() or not holdout.any():
        raise DataError(f"The hash split left one side empty ({len(frame)} rows). Use more rows or change test_size.")
    features = frame.drop(columns=[target])
    return DataSplit(features[~holdout], labels[~holdout], features[holdout], labels[holdout])


def _stratified_holdout(frame: pd.DataFrame, labels: pd.Series, test_size: float, seed: int, min_train: int):
    """Per class: the rows whose hash is in the first ``test_size`` of buckets, at least one."""
    counts = labels.value_counts()
    if len(counts) < 2:
        found = _plain(counts.index[0]) if len(counts) else "nothing"
        raise DataError(
            f"Target column '{labels.name}' has a single class ({found!r}); a classifier needs at least two. "
            "Check data.target, or use a file with more than one class."
        )
    needed = min_train + 1
    if rare := {_plain(label): int(count) for label, count in counts.items() if count < needed}:
        listed = ", ".join(f"{label!r} ({count} rows)" for label, count in rare.items())
        raise DataError(
            f"Class(es) {listed} of '{labels.name}' have fewer than {needed} rows: each class needs one holdout "
            f"row and {min_train} training rows (model.search.cv_folds). Add rows, merge rare classes, or drop them."
        )
    buckets = row_hashes(frame, seed) % _HASH_BUCKETS
    holdout = buckets < round(test_size * _HASH_BUCKETS)
    for label in counts.index:
        members = buckets[labels == label].sort_values(kind="stable")
        held = int(holdout[members.index].sum())
        wanted = min(max(held, 1), len(members) - min_train)
        holdout[members.index] = False
        holdout[members.index[:wanted]] = True  # the lowest buckets: the same rows whatever the file's order
    return holdout


def split_for_contract(frame: pd.DataFrame, contract: Contract, config: ModelConfig) -> DataSplit:
    """The split every stage uses (training, the gate, promote/rollback): typed features, stratified classes."""
    empty = [column.name for column in contract.features if column.name in frame and frame[column.name].isna().all()]
    if empty:
        raise DataError(
            f"Feature column(s) {empty} have no values at all. Drop them from the file, or set "
            "`role: ignore` for them in the data contract."
        )
    typed = feature_frame(frame, contract, keep_target=True)
    return split_holdout(typed, contract.target, config.test_size, config.seed, config.task, config.search.cv_folds)


def check_trainable(
    frame: pd.DataFrame, contract: Contract, config: ModelConfig, candidates: list[Candidate] | None = None
) -> None:
    """Everything about the data and candidates that would fail training, said before it starts."""
    split_for_contract(frame, contract, config)
    for candidate in candidates if candidates is not None else candidates_from_config(config):
        _check_task(candidate, config.task)


def check_contract_fits(contract: Contract, settings: Any) -> None:
    """The contract and the config agree on the target and the task, or a ConfigError names both."""
    if contract.target != settings.data.target:
        raise ConfigError(
            f"data.target is '{settings.data.target}' but the data contract {settings.data.contract} names "
            f"'{contract.target}'. Set data.target to '{contract.target}', or draft the contract again."
        )
    if contract.task != settings.model.task:
        raise ConfigError(
            f"model.task is '{settings.model.task}' but the data contract says '{contract.task}'. "
            "Remove model.task from the config (the contract decides), or draft the contract again."
        )
    if not contract.features:
        raise ConfigError(f"The data contract {settings.data.contract} has no feature columns (role: feature).")


def _plain(label: Any) -> Any:
    """A numpy scalar as the Python value it holds, so messages read ``'Yes'``, not ``np.str_('Yes')``."""
    return label.item() if hasattr(label, "item") else label


def contract_columns(contract: Contract) -> tuple[list[str], list[str]]:
    """Numeric and categorical (text, bool) features, as the contract declares them."""
    numeric = [column.name for column in contract.features if column.type in ("float", "int")]
    categorical = [column.name for column in contract.features if column.type in ("str", "bool")]
    return numeric, categorical


def feature_frame(frame: pd.DataFrame, contract: Contract, *, keep_target: bool = False) -> pd.DataFrame:
    """The contract's features (and target) in the types the model is trained and served with.

    Text columns hold ``str`` or ``nan`` (a CSV column of digits declared ``str`` stays
    text), bool columns ``bool`` or, with nulls, objects; ids, dates and ignored columns
    are dropped. Training, the gate and batch scoring all feed the model through it.
    """
    names = [column.name for column in contract.features]
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise DataError(f"The data lacks the contract's feature column(s) {missing}. Fix the file or the contract.")
    selected = names + ([contract.target] if keep_target and contract.target in frame.columns else [])
    typed = frame[selected].copy()
    for column in contract.features:
        values = typed[column.name]
        if column.type == "str" and values.dtype != object:
            typed[column.name] = values.astype(object).where(values.notna(), np.nan).map(
                lambda value: value if value is np.nan or isinstance(value, str) else str(value)
            )
        elif column.type == "str":
            typed[column.name] = values.where(values.notna(), np.nan)
        elif column.type == "bool" and values.dtype != bool:
            typed[column.name] = values.astype(object).where(values.notna(), np.nan)
        elif column.type in ("float", "int") and not pd.api.types.is_numeric_dtype(values):
            typed[column.name] = pd.to_numeric(values, errors="coerce")
    return typed


def split_manifest(frame: pd.DataFrame, split: DataSplit, seed: int) -> pd.DataFrame:
    """Which row went where: row number, row hash and side, to log with the run."""
    hashes = row_hashes(frame, seed)
    side = pd.Series("unlabeled", index=frame.index)  # rows without a target value are not used
    side[frame.index.isin(split.x_train.index)] = "train"
    side[frame.index.isin(split.x_holdout.index)] = "holdout"
    return pd.DataFrame({"row": range(len(frame)), "row_hash": hashes.map("{:016x}".format), "split": side})


# --- Candidates and preprocessing ------------------------------------------------------

# The built-in estimators are config.BUILTIN_ESTIMATORS (one registry for config and training).
# The default search per built-in: small, so `mlops train` stays around a second.
_DEFAULT_SPACES: dict[str, dict[str, list[Any]]] = {
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
    builtins = BUILTIN_ESTIMATORS[config.task]
    path, defaults = builtins.get(spec, (spec, {}))
    if ":" not in path:
        raise ConfigError(f"Unknown estimator '{spec}' for {config.task}. Use one of {sorted(builtins)} or 'module:Class'.")
    cls = estimator_class(path, config.trusted_packages)  # allow-listed and checked before it is called
    try:
        estimator = cls(**{**defaults, **params})
    except TypeError as exc:
        raise ConfigError(f"Cannot build estimator '{spec}': {exc}. Check model.candidates in the config.") from None
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=config.seed)
    return estimator


def infer_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns, from the dtypes (until a data contract declares them)."""
    types = pd.api.types
    numeric = [c for c in frame.columns if types.is_numeric_dtype(frame[c]) and not types.is_bool_dtype(frame[c])]
    return numeric, [c for c in frame.columns if c not in numeric]


def build_preprocessor(numeric: list[str], categorical: list[str], *, ordinal: bool = False) -> ColumnTransformer:
    """Impute and scale numeric columns; encode categorical ones (missing values are a category).

    ``ordinal`` (tree models) codes each category as a number; otherwise one-hot. Either
    way a category unseen in training is still scored: one-hot as all zeros, ordinal as -1.
    """
    transformers = []
    if numeric:
        transformers.append(("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric))
    if categorical:
        if ordinal:
            encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
        else:
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def build_pipeline(
    estimator: Any, features: pd.DataFrame, columns: tuple[list[str], list[str]] | None = None
) -> Pipeline:
    """The estimator behind preprocessing for ``columns`` (numeric, categorical); a Pipeline is kept as is.

    ``columns`` default to :func:`infer_columns`; a data contract declaring column types passes its own
    (:func:`contract_columns`).
    """
    if isinstance(estimator, Pipeline):
        return clone(estimator)
    ordinal = type(estimator).__module__.startswith(_TREE_MODULES)
    preprocessor = build_preprocessor(*(columns or infer_columns(features)), ordinal=ordinal)
    return Pipeline([("preprocess", preprocessor), ("model", clone(estimator))])


# --- Search and evaluation -------------------------------------------------------------


def search_candidates(
    split: DataSplit,
    config: ModelConfig,
    candidates: list[Candidate] | None = None,
    columns: tuple[list[str], list[str]] | None = None,
) -> SearchResult:
    """Search each candidate's space by cross-validation on the training part, one after the other.

    The best candidate (by mean cross-validated primary metric, never by the holdout,
    which stays for the gate) is refitted on the whole training part and scored on
    the holdout. ``columns`` (numeric, categorical) default to the dtypes' verdict.
    The training flow runs :func:`search_candidate` as one task per candidate instead
    (in parallel on a Dask cluster), then :func:`pick_best`: the same result.
    """
    searches, candidates = [], candidates_to_search(config, candidates)
    for number, candidate in enumerate(candidates, 1):
        _logger().info("searching candidate %d/%d: %s (%d-fold cross-validation)", number, len(candidates), candidate.name,
                       config.search.cv_folds)  # fmt: skip
        searches.append(search_candidate(candidate, split, config, columns))
    return pick_best(searches, split, config)


def candidates_to_search(config: ModelConfig, candidates: list[Candidate] | None = None) -> list[Candidate]:
    """``candidates`` (declared in Python), else ``model.candidates``; none at all is a config error."""
    candidates = candidates if candidates is not None else candidates_from_config(config)
    if not candidates:
        raise ConfigError("No candidates to train. Add model.candidates to the config or pass some.")
    return candidates


def search_candidate(
    candidate: Candidate, split: DataSplit, config: ModelConfig, columns: tuple[list[str], list[str]] | None = None
) -> CandidateSearch:
    """One candidate's cross-validated search: its trials and its best pipeline, refitted on the training part.

    Independent of the other candidates, so each may run in a process (or on a machine) of its own.
    """
    search = _search(candidate, split, config, columns)
    trials = tuple(_trials(candidate.name, search, split, config))
    return CandidateSearch(candidate.name, trials, trials[search.best_index_], float(search.best_score_), search.best_estimator_)


def pick_best(searches: list[CandidateSearch], split: DataSplit, config: ModelConfig) -> SearchResult:
    """The first candidate with the highest cross-validated score, scored on the holdout; every trial kept in order.

    Ties go to the earlier candidate, as ``max`` keeps the first of equals: the order of
    ``model.candidates`` decides, never the order in which parallel searches finished.
    """
    if not searches:
        raise ConfigError("No candidates to train. Add model.candidates to the config or pass some.")
    for number, search in enumerate(searches, 1):
        leader = max(searches[:number], key=lambda found: found.best_score)
        _logger().info("candidate %d/%d %s: %d trials, best cv %s %.4f; best so far: %s %.4f", number, len(searches),
                       search.candidate, len(search.trials), config.metric, search.best_trial.cv_score, leader.candidate,
                       leader.best_trial.cv_score)  # fmt: skip
    best = max(searches, key=lambda search: search.best_score)
    params = _params(best.candidate, best.pipeline, split, config)
    metrics = evaluate(best.pipeline, split.x_holdout, split.y_holdout, config.task, config.positive_label)
    cv_metrics = {f"cv_{config.metric}": best.best_trial.cv_score, f"cv_{config.metric}_std": best.best_trial.cv_std}
    trials = tuple(trial for search in searches for trial in search.trials)
    return SearchResult(TrainedModel(best.pipeline, metrics, params, cv_metrics), trials, config.metric)


def _logger() -> logging.Logger:
    return logging.getLogger(__name__)


def _search(candidate: Candidate, split: DataSplit, config: ModelConfig, columns) -> Any:
    _check_task(candidate, config.task)
    pipeline = build_pipeline(candidate.estimator, split.x_train, columns)
    space = {_step_param(pipeline, name): values for name, values in candidate.space.items()}
    folds = StratifiedKFold if config.task == "classification" else KFold
    common = {
        "scoring": scorer(config.metric, config.positive_label),
        "cv": folds(config.search.cv_folds, shuffle=True, random_state=config.seed),
        "n_jobs": config.search.n_jobs,
        "error_score": "raise",
    }
    if config.search.kind == "random" and space:
        search = RandomizedSearchCV(pipeline, space, n_iter=config.search.n_iter, random_state=config.seed, **common)
    else:
        search = GridSearchCV(pipeline, space or [{}], **common)
    try:
        return search.fit(split.x_train, split.y_train, **_weight_params(pipeline, split, candidate.name))
    except ValueError as exc:
        raise ConfigError(f"Candidate '{candidate.name}' cannot be fitted: {exc}") from None


def _weight_params(pipeline: Pipeline, split: DataSplit, name: str) -> dict[str, Any]:
    """``{"model__sample_weight": weights}`` for the pipeline's final estimator, when the split is weighted.

    GridSearchCV slices it per fold and passes it to the refit as well.
    """
    if split.w_train is None:
        return {}
    path, estimator = [], pipeline
    while hasattr(estimator, "steps"):
        step, estimator = estimator.steps[-1]
        path.append(step)
    if not has_fit_parameter(estimator, "sample_weight"):
        raise ConfigError(
            f"Candidate '{name}' ({type(estimator).__name__}) does not take sample weights, and the retraining "
            "data is weighted. Set monitoring.labeled_weight to 1, or use an estimator that accepts sample_weight."
        )
    return {"__".join([*path, "sample_weight"]): split.w_train.to_numpy()}


def _check_task(candidate: Candidate, task: str) -> None:
    """A regressor for a classification target (or the reverse) is a config error, before any fit."""
    estimator = candidate.estimator.steps[-1][1] if hasattr(candidate.estimator, "steps") else candidate.estimator
    if task == "classification" and is_regressor(estimator) or task == "regression" and is_classifier(estimator):
        kind = "regressor" if task == "classification" else "classifier"
        raise ConfigError(
            f"Candidate '{candidate.name}' ({type(estimator).__name__}) is a {kind}, but the task is {task} "
            "(from the data contract). Use an estimator for the task, or check data.target."
        )


def _step_param(pipeline: Pipeline, name: str) -> str:
    # Spaces name the estimator's own parameters; a user's pipeline names its steps itself.
    return name if "__" in name or "model" not in pipeline.named_steps else f"model__{name}"


def _trials(candidate: str, search: GridSearchCV | RandomizedSearchCV, split: DataSplit, config: ModelConfig) -> list[Trial]:
    results = search.cv_results_
    scoring = getattr(search.scoring, "__name__", str(search.scoring))
    lower = str(scoring).startswith("neg_") or scoring.removesuffix("_scorer") in LOWER_IS_BETTER
    sign = -1.0 if lower else 1.0
    return [
        Trial(candidate, dict(params), sign * float(mean), float(std),
              _params(candidate, clone(search.estimator).set_params(**params), split, config))
        for params, mean, std in zip(results["params"], results["mean_test_score"], results["std_test_score"])
    ]


def _params(candidate: str, pipeline: Pipeline, split: DataSplit, config: ModelConfig) -> dict[str, Any]:
    """Flat, readable run params: the candidate, the split, and the final estimator's settings.

    A setting scikit-learn marks ``'deprecated'`` (a placeholder default, e.g. LogisticRegression's
    ``penalty``) is left out: it says nothing about the model and reads as a choice in the UI.
    """
    estimator = pipeline.steps[-1][1]
    settings = {name: value for name, value in estimator.get_params().items() if not _deprecated(value)}
    return {
        "estimator": candidate,
        "estimator_class": type(estimator).__name__,
        "task": config.task,
        "seed": config.seed,
        "test_size": config.test_size,
        "train_rows": len(split.x_train),
        "holdout_rows": len(split.x_holdout),
        **{f"model.{name}": value for name, value in settings.items()},
    }


def _deprecated(value: Any) -> bool:
    """scikit-learn's placeholder for a deprecated parameter: the string or a sentinel that prints as it."""
    try:
        return str(value) == "deprecated"
    except Exception:  # noqa: BLE001 (an estimator's odd __str__ is no reason to fail a training)
        return False


def evaluate(
    pipeline: Any, features: pd.DataFrame, labels: pd.Series, task: str = "classification", positive: Any = None
) -> dict[str, float]:
    """Holdout metrics under stable names (:mod:`mlops.metrics`), so runs compare in the MLflow UI."""
    return score_model(pipeline, features, labels, task, positive)


def train_model(split: DataSplit, config: ModelConfig) -> TrainedModel:
    """Fit the configured candidates' best pipeline and score it on the holdout (no trials kept)."""
    return search_candidates(split, config).best
