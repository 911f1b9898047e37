"""The bare baseline: Starlette + uvicorn calling ``predict_proba``, nothing else.

    .venv/bin/python benchmarks/_bare_server.py MODEL_DIR PORT

The limit of a hand-written endpoint without batching: one worker, JSON in
(``{"records": [...]}``, as our ``/predict``), labels and probabilities out, no
validation, logging or metrics.
"""

from __future__ import annotations

import sys


def build_app(model_dir: str):
    import mlflow.sklearn
    import pandas as pd
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    model = mlflow.sklearn.load_model(model_dir)
    features = list(model.feature_names_in_)

    async def predict(request: Request) -> JSONResponse:
        frame = pd.DataFrame((await request.json())["records"], columns=features)
        probabilities = model.predict_proba(frame)
        labels = model.classes_[probabilities.argmax(axis=1)]
        return JSONResponse({"predictions": labels.tolist(), "probabilities": probabilities.tolist()})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/readyz", ready)])


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
