"""Metrics per task under stable names, so runs compare in the MLflow UI.

One place decides what each name means for each task, for the holdout, the gate,
cross-validation and monitoring alike:

- binary classification: ``accuracy``, ``balanced_accuracy``, ``f1``, ``precision``,
  ``recall`` (of the positive class), ``roc_auc``, ``average_precision``, ``log_loss``;
- multi-class: the same names, ``f1``/``precision``/``recall`` as macro averages,
  ``roc_auc`` one-vs-rest (macro), no ``average_precision``;
- regression: ``rmse``, ``mae``, ``r2``.

The positive class of a binary target is the last of the sorted labels (``1``,
``True``, ``"yes"`` after ``"no"``), as in scikit-learn, unless
``model.positive_label`` names another. Labels stay the user's own (text, int, bool).

    score_labels(["a", "b"], ["a", "a"], "classification")  # {"accuracy": 0.5, ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics

__all__ = [
    "LOWER_IS_BETTER",
    "NEEDS_PROBABILITIES",
    "higher_is_better",
    "positive_label",
    "score_labels",
    "score_model",
    "scorer",
]

LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})
# Metrics that need class probabilities, not only labels.
NEEDS_PROBABILITIES = frozenset({"roc_auc", "average_precision", "log_loss"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: accuracy-like up, error-like (rmse, mae, log_loss) down."""
    return metric not in LOWER_IS_BETTER


def positive_label(classes: Sequence[Any], configured: Any = None) -> Any:
    """The class a binary metric is about: the configured one, else the last sorted label."""
    if configured is not None:
        matches = [label for label in classes if label == configured or str(label) == str(configured)]
        if matches:
            return matches[0]
    return list(classes)[-1]


def score_labels(
    y_true: Any,
    y_pred: Any,
    task: str,
    *,
    probabilities: Any = None,
    classes: Sequence[Any] | None = None,
    positive: Any = None,
) -> dict[str, float]:
    """Every metric of ``task`` computable from these labels (and probabilities, when given).

    A metric that cannot be computed on this set (ROC AUC when the labels hold one
    class, say: a small labeled window) is left out, never an error.
    """
    if task == "regression":
        return {
            "rmse": math.sqrt(float(metrics.mean_squared_error(y_true, y_pred))),
            "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
            "r2": float(metrics.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
        }
    classes = list(classes) if classes is not None else sorted(set(y_true) | set(y_pred), key=_sort_key)
    binary = len(classes) == 2
    averaged: dict[str, Any] = (
        {"average": "binary", "pos_label": positive_label(classes, positive)} if binary else {"average": "macro"}
    )
    found = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _safe(metrics.balanced_accuracy_score, y_true, y_pred),
        "f1": _safe(metrics.f1_score, y_true, y_pred, labels=classes if not binary else None, zero_division=0,
                    **averaged),
        "precision": _safe(metrics.precision_score, y_true, y_pred, labels=classes if not binary else None,
                           zero_division=0, **averaged),
        "recall": _safe(metrics.recall_score, y_true, y_pred, labels=classes if not binary else None,
                        zero_division=0, **averaged),
    }
    if probabilities is not None:
        found.update(_probability_metrics(y_true, probabilities, classes, averaged.get("pos_label")))
    return {name: value for name, value in found.items() if value is not None and not math.isnan(value)}


def _probability_metrics(y_true: Any, probabilities: Any, classes: list[Any], positive: Any) -> dict[str, float | None]:
    probabilities = np.asarray(probabilities, dtype="float64")
    found: dict[str, float | None] = {
        "log_loss": _safe(metrics.log_loss, y_true, probabilities, labels=classes),
    }
    if positive is not None:  # binary
        scores = probabilities[:, classes.index(positive)]
        truth = np.asarray([label == positive for label in y_true])
        found["roc_auc"] = _safe(metrics.roc_auc_score, truth, scores)
        found["average_precision"] = _safe(metrics.average_precision_score, truth, scores)
    else:
        found["roc_auc"] = _safe(metrics.roc_auc_score, y_true, probabilities, multi_class="ovr", average="macro",
                                 labels=classes)
    return found


def score_model(model: Any, features: Any, labels: Any, task: str, positive: Any = None) -> dict[str, float]:
    """A fitted model's metrics on ``features``/``labels`` (one pass through ``predict_proba``)."""
    if task == "regression":
        return score_labels(labels, model.predict(features), task)
    probabilities = model.predict_proba(features)
    classes = list(model.classes_)
    predicted = model.classes_[probabilities.argmax(axis=1)]
    return score_labels(labels, predicted, task, probabilities=probabilities, classes=classes, positive=positive)


def scorer(metric: str, positive: Any = None) -> Any:
    """The scikit-learn scorer behind ``metric`` for cross-validation, with the same meaning as above.

    Lower-is-better metrics are negated, as scikit-learn's search maximises.
    """
    if metric in ("rmse", "mae", "r2"):
        return {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"}[metric]

    def score(estimator: Any, features: Any, labels: Any) -> float:
        value = score_model(estimator, features, labels, "classification", positive).get(metric, float("nan"))
        return value if higher_is_better(metric) else -value

    score.__name__ = f"{metric}_scorer"
    return score


def _safe(function: Any, *args: Any, **kwargs: Any) -> float | None:
    try:
        return float(function(*args, **kwargs))
    except ValueError:
        return None


def _sort_key(label: Any) -> tuple[str, Any]:
    return (type(label).__name__, label)
