"""Train and evaluate a scikit-learn pipeline, reproducibly.

The same data, config and seed give the same split, the same model and the same
metrics: the split is seeded and stratified, and the estimators are seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from mlops.config import ModelConfig

__all__ = ["DataSplit", "TrainedModel", "build_pipeline", "evaluate", "split_holdout", "train_model"]


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
class TrainedModel:
    """A fitted pipeline with its holdout metrics and the parameters that made it."""

    pipeline: Pipeline
    metrics: dict[str, float]
    params: dict[str, Any]


def split_holdout(frame: pd.DataFrame, target: str, test_size: float, seed: int) -> DataSplit:
    """Split into train and holdout, stratified on the target, seeded."""
    from sklearn.model_selection import train_test_split

    if target not in frame.columns:
        raise DataError(f"Target column '{target}' is not in the data. Set data.target in the config.")
    features = frame.drop(columns=[target])
    labels = frame[target]
    if labels.nunique() < 2:
        raise DataError(f"Target column '{target}' has a single class; a classifier needs at least two.")
    x_train, x_holdout, y_train, y_holdout = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    return DataSplit(x_train, y_train, x_holdout, y_holdout)


def build_pipeline(config: ModelConfig) -> Pipeline:
    """The configured estimator behind a scaler, seeded for reproducibility."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    estimators = {
        "logistic_regression": lambda: LogisticRegression(max_iter=1000, random_state=config.seed),
        "random_forest": lambda: RandomForestClassifier(n_estimators=100, random_state=config.seed, n_jobs=1),
    }
    return Pipeline([("scale", StandardScaler()), ("model", estimators[config.estimator]())])


def evaluate(pipeline: Pipeline, features: pd.DataFrame, labels: pd.Series) -> dict[str, float]:
    """Holdout metrics under stable names, so runs compare in the MLflow UI."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    predicted = pipeline.predict(features)
    scores = pipeline.predict_proba(features)[:, 1]
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted)),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted)),
        "roc_auc": float(roc_auc_score(labels, scores)),
    }


def train_model(split: DataSplit, config: ModelConfig) -> TrainedModel:
    """Fit the configured pipeline on the training part and score it on the holdout."""
    pipeline = build_pipeline(config)
    pipeline.fit(split.x_train, split.y_train)
    params = {
        "estimator": config.estimator,
        "seed": config.seed,
        "test_size": config.test_size,
        "train_rows": len(split.x_train),
        "holdout_rows": len(split.x_holdout),
        **{f"model.{name}": value for name, value in pipeline.named_steps["model"].get_params().items()},
    }
    return TrainedModel(pipeline, evaluate(pipeline, split.x_holdout, split.y_holdout), params)
