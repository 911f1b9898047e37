"""The greedy batcher behind /predict: merged model calls, answers in order, errors to all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.batching import GreedyBatcher

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
