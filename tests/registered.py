"""Register model versions the way training does, for the serving-side tests."""

from __future__ import annotations

from pathlib import Path

from mlops.config import Settings

TRAIN_CSV = Path(__file__).resolve().parents[1] / "data" / "train.csv"


def features():
    import pandas as pd

    return pd.read_csv(TRAIN_CSV).drop(columns="target")


def use_experiment(settings: Settings) -> None:
    """The project's experiment, its artifacts under the state folder (not ./mlruns)."""
    import mlflow

    if mlflow.get_experiment_by_name(settings.model.experiment) is None:
        location = settings.mlflow_artifact_dir.resolve().as_uri()
        mlflow.create_experiment(settings.model.experiment, artifact_location=location)
    mlflow.set_experiment(settings.model.experiment)


def register(settings: Settings, features, C: float) -> str:
    import mlflow
    import pandas as pd
    import skops.io
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = pd.read_csv(TRAIN_CSV)["target"]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(features, target)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    use_experiment(settings)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(features, pipeline.predict(features)),
            registered_model_name=settings.model.name,
            serialization_format="skops",
            skops_trusted_types=trusted,
            pip_requirements=["scikit-learn"],
        )
    return str(info.registered_model_version)


def set_champion(settings: Settings, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(settings.model.name, "champion", version)


def register_unloadable(settings: Settings) -> str:
    """A version BentoML imports but the service cannot load: a pyfunc without the sklearn flavour."""
    import mlflow
    import mlflow.pyfunc

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0] * len(model_input)

    use_experiment(settings)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Constant(), registered_model_name=settings.model.name, pip_requirements=[]
        )
    return str(info.registered_model_version)
