"""shiftc.mlflow against a real local MLflow tracking store (SQLite database and artifact folder in a
temporary folder; no server, no network): what log_model records, and that the pyfunc model MLflow
loads back gives exactly ``shiftc.load(...).run`` for an FP32 and an integer-only build of the
Fashion-MNIST CNN, on real test images."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

import shiftc
import shiftc.mlflow
from shiftc import artifact

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
CNN = MODELS / "cnn.onnx"
SAMPLE = MODELS / "cnn_sample.npz"  # 8 Fashion-MNIST test images
BUILDS = {"fp32": {}, "integer-only": {"integer_only": True, "calibration": SAMPLE}}


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A fresh SQLite tracking store and experiment (artifacts in the same temporary folder), made
    the default for MLflow's fluent API through its environment variables for this module."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    exp = mlflow.MlflowClient(tracking_uri=uri).create_experiment("shiftc", artifact_location=(root / "artifacts").as_uri())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_EXPERIMENT_ID", exp)
        yield root


def _images(n: int) -> np.ndarray:
    with np.load(SAMPLE) as z:
        return np.ascontiguousarray(z["input"][:n], dtype=np.float32)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_pyfunc_predict_is_run_bit_for_bit(tracking, compiled, build):
    model = compiled(CNN, "x86", **BUILDS[build])
    with mlflow.start_run() as run:
        info = shiftc.mlflow.log_model(model, artifact_path="cnn")
    served = mlflow.pyfunc.load_model(info.model_uri)
    direct = shiftc.load(model.path)
    images = _images(3)

    x = images[:1]
    want = direct.run(x)
    for given in (x, {"input": x}):
        got = served.predict(given)
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)

    # three rows (one image each, as a batch or as a DataFrame of flattened rows): three batch-1 runs
    rows = [direct.run(images[i:i + 1])["logits"] for i in range(3)]
    frame = pd.DataFrame({"input": [im.ravel().tolist() for im in images]})
    for given in (images, frame):
        assert np.array_equal(served.predict(given)["logits"], np.concatenate(rows))
    assert len({r.tobytes() for r in rows}) == 3  # three different images, not one row repeated

    _check_logged(run.info.run_id, info, model)


def _check_logged(run_id: str, info, model):
    """The run's tag, metrics and report, and the model's params, as log_model documents them."""
    aid = artifact.artifact_id(model.path)
    data = mlflow.get_run(run_id).data
    assert data.tags["shiftc.artifact_id"] == aid and data.tags["shiftc.target"] == "x86"
    meta = artifact.verify(model.path)
    size = sum(f.stat().st_size for f in model.path.rglob("*") if f.is_file())
    assert data.metrics["artifact_bytes"] == size
    errors = {f"{s['name']}.{k}": v for s in meta["report"]["stages"] if s["error"] for k, v in s["error"].items()}
    sizes = {f"size.{k}": v for k, v in meta["report"]["sizes"].items()}
    assert sizes and {k: v for k, v in data.metrics.items() if k != "artifact_bytes"} == pytest.approx(errors | sizes)
    assert ("integerize.rel_l2" in data.metrics) == model.meta["options"]["integer_only"]
    report = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="cnn/shiftc_report.json")).read_text())
    assert report == meta["report"]
    logged = mlflow.get_logged_model(info.model_id)
    assert logged.params["artifact_id"] == aid and logged.params["option.integer_only"] == str(meta["options"]["integer_only"])


def test_pyfunc_refuses_a_logged_folder_that_is_no_longer_the_logged_artifact(tracking, compiled):
    model = compiled(CNN, "x86")
    with mlflow.start_run():
        info = shiftc.mlflow.log_model(model, artifact_path="cnn")
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    meta_file = next(local.glob(f"artifacts/*/{artifact.META}"))
    # still self-consistent (every file's sha256 matches), but no longer the artifact id that was logged
    meta_file.write_text(json.dumps(json.loads(meta_file.read_text()), indent=1))
    with pytest.raises(shiftc.InputError, match="not the expected"):
        mlflow.pyfunc.load_model(str(local))


@pytest.mark.parametrize("thing", [np.zeros(3), "no-such-folder", "empty-folder"])
def test_logging_something_that_is_not_a_compiled_artifact_is_refused(tracking, tmp_path, thing):
    if isinstance(thing, str):
        thing = tmp_path / thing
        if thing.name == "empty-folder":
            thing.mkdir()
    with pytest.raises(shiftc.InputError, match="CompiledModel or a compiled artifact folder|meta.json"):
        shiftc.mlflow.log_model(thing)
    assert mlflow.active_run() is None  # refused before anything was logged
