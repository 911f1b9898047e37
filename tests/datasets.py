"""Real-looking tables for the tests, built from what scikit-learn ships offline.

Users' tables are not the bundled breast-cancer file: they have text labels, many
classes, nulls, text categories, integer and boolean columns, identifiers, dates,
awkward column names and imbalance. Each builder returns ``(train, current, spec)``:
``current`` is a later batch with a documented, seeded shift, ``spec`` says what
the loop must find (target, task, classes, columns the draft must exclude).

    train, current, spec = build("flowers")
    train.to_csv(tmp_path / "flowers.csv", index=False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DATASETS", "DatasetSpec", "build", "write"]


@dataclass(frozen=True)
class DatasetSpec:
    """What the loop must see in one dataset."""

    name: str
    target: str
    task: str  # classification | regression
    classes: tuple[Any, ...] = ()
    excluded: tuple[str, ...] = ()  # identifiers and dates the draft keeps out of the features
    text_features: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)


def _dates(rows: int, rng: np.random.Generator) -> list[str]:
    start = np.datetime64("2024-01-01")
    return [str(start + int(day)) for day in rng.integers(0, 700, rows)]


def _shifted(values: pd.Series, reference: pd.Series, by: float) -> pd.Series:
    """``values + by``, kept inside the reference's range: a shift the contract still accepts."""
    return (values + by).clip(upper=reference.max())


def flowers() -> tuple[pd.DataFrame, pd.DataFrame, DatasetSpec]:
    """Iris: 3 text classes, nulls in a feature, a text category, an id, a date, names with spaces."""
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(1)
    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "species"})
    frame["species"] = frame["species"].map(dict(enumerate(bunch.target_names)))
    frame.insert(0, "flower_id", [f"F{index:05d}" for index in rng.permutation(len(frame))])
    frame["garden"] = rng.choice(["north", "south", "east"], len(frame))
    frame["picked on"] = _dates(len(frame), rng)
    frame.loc[rng.choice(len(frame), 12, replace=False), "petal width (cm)"] = np.nan
    frame.loc[rng.choice(len(frame), 8, replace=False), "garden"] = np.nan
    frame = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    train, current = frame.iloc[:120].reset_index(drop=True), frame.iloc[120:].reset_index(drop=True)
    current = current.copy()
    current["sepal length (cm)"] = _shifted(current["sepal length (cm)"], train["sepal length (cm)"], 1.0)
    spec = DatasetSpec("flowers", "species", "classification", tuple(map(str, bunch.target_names)),
                       ("flower_id", "picked on"), ("garden",))
    return train, current, spec


def wines() -> tuple[pd.DataFrame, pd.DataFrame, DatasetSpec]:
    """Wine: 3 integer classes, column names with '/', an integer feature."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})
    frame["proline"] = frame["proline"].round().astype("int64")
    frame["magnesium"] = frame["magnesium"].astype("int64")
    frame = frame.sample(frac=1.0, random_state=5).reset_index(drop=True)
    train, current = frame.iloc[:140].reset_index(drop=True), frame.iloc[140:].reset_index(drop=True)
    current = current.copy()
    current["alcohol"] = _shifted(current["alcohol"], train["alcohol"], 1.2)
    return train, current, DatasetSpec("wines", "cultivar", "classification", (0, 1, 2))


def churn() -> tuple[pd.DataFrame, pd.DataFrame, DatasetSpec]:
    """Breast cancer as an imbalanced No/Yes target, text and bool features, a customer id."""
    from sklearn.datasets import load_breast_cancer

    rng = np.random.default_rng(11)
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.iloc[:, [0, 1, 2, 20, 21, 22, 27]].copy()
    frame.columns = ["mean.radius", "mean.texture", "mean.perimeter", "worst radius", "worst texture",
                     "worst perimeter", "worst concave points"]
    frame["churned"] = np.where(bunch.target == 0, "Yes", "No")
    # Imbalance: keep a quarter of the "Yes" rows.
    keep = (frame["churned"] == "No") | (rng.random(len(frame)) < 0.25)
    frame = frame[keep].reset_index(drop=True)
    frame.insert(0, "customer_id", rng.permutation(np.arange(100_000, 100_000 + len(frame))))
    frame["plan"] = rng.choice(["basic", "plus", "pro"], len(frame), p=[0.5, 0.3, 0.2])
    frame["paperless"] = rng.random(len(frame)) < 0.6
    frame["tenure_months"] = rng.integers(1, 72, len(frame))
    frame = frame.sample(frac=1.0, random_state=2).reset_index(drop=True)
    train, current = frame.iloc[:320].reset_index(drop=True), frame.iloc[320:].reset_index(drop=True)
    current = current.copy()
    current["plan"] = rng.choice(["basic", "plus", "pro", "enterprise"], len(current), p=[0.1, 0.2, 0.3, 0.4])
    current["worst radius"] = _shifted(current["worst radius"], train["worst radius"], 4.0)
    spec = DatasetSpec("churn", "churned", "classification", ("No", "Yes"), ("customer_id",), ("plan",))
    return train, current, spec


def prices() -> tuple[pd.DataFrame, pd.DataFrame, DatasetSpec]:
    """Diabetes as regression with text categories, integer years, a bool and non-ASCII names."""
    from sklearn.datasets import load_diabetes

    rng = np.random.default_rng(4)
    bunch = load_diabetes(as_frame=True, scaled=False)
    frame = bunch.frame.rename(columns={"target": "progression", "bmi": "índice_masa", "bp": "blood pressure"})
    frame["age"] = frame["age"].round().astype("int64")
    frame["sex"] = np.where(frame["sex"] > 1.5, "female", "male")
    frame["clinic"] = rng.choice(["Oslo", "Bergen", "Tromsø"], len(frame))
    frame["smoker"] = rng.random(len(frame)) < 0.3
    frame["visit"] = _dates(len(frame), rng)
    frame.loc[rng.choice(len(frame), 20, replace=False), "clinic"] = np.nan
    frame = frame.sample(frac=1.0, random_state=9).reset_index(drop=True)
    train, current = frame.iloc[:360].reset_index(drop=True), frame.iloc[360:].reset_index(drop=True)
    current = current.copy()
    current["índice_masa"] = _shifted(current["índice_masa"], train["índice_masa"], 5.0)
    spec = DatasetSpec("prices", "progression", "regression", (), ("visit",), ("sex", "clinic"))
    return train, current, spec


DATASETS: dict[str, Callable[[], tuple[pd.DataFrame, pd.DataFrame, DatasetSpec]]] = {
    "flowers": flowers,
    "wines": wines,
    "churn": churn,
    "prices": prices,
}


def build(name: str) -> tuple[pd.DataFrame, pd.DataFrame, DatasetSpec]:
    train, current, spec = DATASETS[name]()
    return train, _inside_training_ranges(current, train), spec


def _inside_training_ranges(current: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """The later batch within the training file's numeric ranges: a shift the drafted contract accepts."""
    current = current.copy()
    for name in train.columns:
        if pd.api.types.is_numeric_dtype(train[name]) and not pd.api.types.is_bool_dtype(train[name]):
            clipped = current[name].clip(train[name].min(), train[name].max())
            current[name] = clipped.astype(train[name].dtype) if train[name].notna().all() else clipped
    return current


def write(name: str, folder: Path, suffix: str = ".csv") -> tuple[Path, Path, DatasetSpec]:
    """Write ``name``'s training and current files into ``folder``; CSV or Parquet by ``suffix``."""
    train, current, spec = build(name)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{name}{suffix}", folder / f"{name}-current{suffix}"
    for frame, path in zip((train, current), paths):
        frame.to_parquet(path, index=False) if suffix == ".parquet" else frame.to_csv(path, index=False)
    return paths[0], paths[1], spec
