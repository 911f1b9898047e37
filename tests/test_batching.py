"""The greedy batcher behind /predict: merged model calls, answers in order, errors to all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.service.batching import GreedyBatcher

TRAIN_CSV = Path(__file__).resolve().parents[1] / "data" / "train.csv"


@pytest.fixture(scope="module")
def model_and_frame():
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(TRAIN_CSV)
    features = frame.drop(columns="target")
    return LogisticRegression(max_iter=5000).fit(features, frame["target"]), features


def _scorer(model, calls: list[int]):
    def score(frame):
        calls.append(len(frame))
        probabilities = model.predict_proba(frame)
        return model.classes_[probabilities.argmax(axis=1)], probabilities

    return score


def test_batcher__concurrent_requests_share_calls_and_get_their_own_rows(model_and_frame):
    model, features = model_and_frame
    calls: list[int] = []
    batcher = GreedyBatcher(_scorer(model, calls), list(features.columns), max_rows=64)
    requests = [features.iloc[i : i + 1 + i % 3] for i in range(40)]

    async def send_all():
        return await asyncio.gather(*(batcher.score(frame) for frame in requests))

    answers = asyncio.run(send_all())

    for frame, (labels, probabilities) in zip(requests, answers):
        np.testing.assert_allclose(probabilities, model.predict_proba(frame))
        assert list(labels) == list(model.predict(frame))
    assert sum(calls) == sum(len(frame) for frame in requests)
    assert len(calls) < len(requests) and max(calls) <= 64  # merged, within the bound


def test_batcher__one_request_alone_is_scored_at_once(model_and_frame):
    model, features = model_and_frame
    calls: list[int] = []
    batcher = GreedyBatcher(_scorer(model, calls), list(features.columns), max_rows=64)

    labels, _ = asyncio.run(batcher.score(features.iloc[:1]))

    assert calls == [1] and len(labels) == 1


def test_batcher__a_request_over_the_bound_is_scored_alone(model_and_frame):
    model, features = model_and_frame
    calls: list[int] = []
    batcher = GreedyBatcher(_scorer(model, calls), list(features.columns), max_rows=64)

    async def send_all():
        return await asyncio.gather(batcher.score(features.iloc[:1]), batcher.score(features.iloc[:200]), batcher.score(features.iloc[:1]))

    answers = asyncio.run(send_all())

    assert [len(labels) for labels, _ in answers] == [1, 200, 1]
    assert 200 in calls and sum(calls) == 202


def test_batcher__a_failing_call_fails_every_request_in_it_and_the_next_call_works(model_and_frame):
    model, features = model_and_frame
    batcher = GreedyBatcher(_scorer(model, []), list(features.columns), max_rows=64)
    broken = features.iloc[:2].drop(columns="mean_radius")  # the model refuses it

    async def send():
        results = await asyncio.gather(batcher.score(broken), return_exceptions=True)
        return results, await batcher.score(features.iloc[:3])

    (failure,), (labels, _) = asyncio.run(send())

    assert isinstance(failure, ValueError)
    assert len(labels) == 3


def test_batcher__a_regressor_gets_numbers_and_no_probabilities():
    from sklearn.linear_model import Ridge

    frame = pd.read_csv(TRAIN_CSV)
    features = frame.drop(columns="target")
    model = Ridge().fit(features, frame["target"])
    batcher = GreedyBatcher(lambda f: (model.predict(f), None), list(features.columns), max_rows=64)

    async def send_all():
        return await asyncio.gather(*(batcher.score(features.iloc[i : i + 2]) for i in range(10)))

    for i, (values, probabilities) in enumerate(asyncio.run(send_all())):
        assert probabilities is None
        np.testing.assert_allclose(values, model.predict(features.iloc[i : i + 2]))


def test_batcher__merged_text_and_bool_columns_keep_their_types():
    seen: list[pd.DataFrame] = []

    def score(frame):
        seen.append(frame)
        return frame["plan"].to_numpy(), None

    columns = ["plan", "paperless", "tenure"]
    with_nulls = pd.DataFrame({"plan": ["pro", np.nan], "paperless": np.array([True, np.nan], dtype=object), "tenure": [3, 4]})
    plain = pd.DataFrame({"plan": ["basic"], "paperless": [False], "tenure": [5]})
    batcher = GreedyBatcher(score, columns, max_rows=64)

    async def send_all():
        return await asyncio.gather(batcher.score(plain), batcher.score(with_nulls), batcher.score(plain))

    answers = asyncio.run(send_all())

    [merged] = seen  # all three queued before the first call: one model call
    assert merged["plan"].dtype == object and merged["paperless"].dtype == object and merged["tenure"].dtype == "int64"
    assert merged["plan"].fillna("?").tolist() == ["basic", "pro", "?", "basic"]
    assert merged["paperless"].fillna("?").tolist() == [False, True, "?", False]
    assert [len(labels) for labels, _ in answers] == [1, 2, 1] and answers[1][0][0] == "pro"
