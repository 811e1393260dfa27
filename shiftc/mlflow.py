"""MLflow integration (``pip install 'shiftc[mlflow]'``): log a compiled artifact to the active run
and serve it as an MLflow ``pyfunc`` model.

``log_model(compiled, artifact_path="model")`` logs, to the active run (MLflow starts one if none is):

* a ``pyfunc`` model holding the artifact folder; ``mlflow.pyfunc.load_model(uri)`` opens it with
  ``shiftc.load(folder, expect=ID)``, so only the exact logged bytes load;
* its artifact id (run tag ``shiftc.artifact_id``; model param ``artifact_id``), target and pass options;
* the compile report as ``ARTIFACT_PATH/shiftc_report.json`` in the run's artifacts;
* metrics: every measured error number of a lossy stage (``integerize.rel_l2``, ...) and the
  artifact's size in bytes (``artifact_bytes``), linked to the logged model.

``predict`` takes a numpy array (single-input models), a dict of arrays keyed by input name, or a
pandas DataFrame with one column per input holding each row's flattened values. Rows along the
leading axis are run in chunks of the compiled batch size and the outputs stacked; it returns a dict
of arrays keyed by output name, like ``CompiledModel.run``.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

import numpy as np

from . import __version__, artifact
from .api import CompiledModel, load
from .core.errors import InputError
from .core.tensor_spec import TensorSpec

try:
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema
    from mlflow.types import TensorSpec as MlflowTensorSpec
except ImportError as exc:  # the optional extra is not installed
    raise ImportError(f"shiftc.mlflow needs MLflow: pip install 'shiftc[mlflow]' ({exc})") from exc

ARTIFACT_KEY = "shiftc_artifact"


# The model's code file (MLflow "models from code"): loading runs this file, not an unpickled object.
MODEL_CODE = "import mlflow.models\nfrom shiftc.mlflow import ShiftcPyfunc\n\nmlflow.models.set_model(ShiftcPyfunc())\n"


class ShiftcPyfunc(mlflow.pyfunc.PythonModel):
    """The ``pyfunc`` flavour: loads the logged artifact folder with ``shiftc.load`` and runs it."""

    def load_context(self, context):
        """Open the logged folder; it must be exactly the artifact id recorded at logging."""
        self.model = load(context.artifacts[ARTIFACT_KEY], expect=context.model_config["artifact_id"])

    def predict(self, context, model_input, params=None):
        """Outputs by name for an array, dict or DataFrame; leading-axis rows run in compiled-batch chunks."""
        model = self.model
        inputs = _input_dict(model.inputs, model_input)
        allow = bool((params or {}).get("allow_nonfinite", False))
        batch = _batch(model.inputs, model.outputs)
        rows = {np.shape(x)[0] if np.ndim(x) else None for x in inputs.values()}
        if batch is None or rows == {batch} or len(rows) != 1 or None in rows:
            return model.run(inputs, allow_nonfinite=allow)  # run's own checks explain any mismatch
        n = rows.pop()
        if n % batch:
            raise InputError(f"inputs hold {n} rows; the model runs batches of {batch}: pass a multiple of {batch} rows")
        parts = [model.run({k: v[i:i + batch] for k, v in inputs.items()}, allow_nonfinite=allow) for i in range(0, n, batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _input_dict(specs: list[TensorSpec], model_input) -> dict[str, np.ndarray]:
    """The inputs by name, from a dict (MLflow turns a DataFrame into one through the signature) or,
    for a single-input model, an array."""
    if isinstance(model_input, dict):
        return dict(model_input)
    if len(specs) != 1:
        raise InputError(f"the model takes {len(specs)} inputs {[s.name for s in specs]}: pass a dict of arrays or a DataFrame")
    return {specs[0].name: np.asarray(model_input)}


def _batch(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> int | None:
    """The compiled batch size: the leading dim every input and output shares, or None."""
    leading = {s.shape[0] if len(s.shape) else None for s in [*inputs, *outputs]}
    return leading.pop() if len(leading) == 1 and None not in leading else None


def _signature(meta: dict) -> ModelSignature:
    """Named tensor specs; a shared leading (batch) dim is variable, since ``predict`` runs chunks."""
    inputs, outputs = ([TensorSpec.from_json(d) for d in meta[k]] for k in ("inputs", "outputs"))
    variable = _batch(inputs, outputs) is not None

    def spec(s):
        shape = (-1, *s.shape[1:]) if variable else tuple(s.shape)
        return MlflowTensorSpec(np.dtype(s.dtype), shape, s.name)

    params = ParamSchema([ParamSpec("allow_nonfinite", "boolean", False)])
    return ModelSignature(Schema([spec(s) for s in inputs]), Schema([spec(s) for s in outputs]), params)


def metrics(meta: dict, folder: Path) -> dict[str, float]:
    """The report's measured error numbers (``STAGE.KEY``), its recorded sizes (``size.NAME``) and
    the artifact's bytes on disk (``artifact_bytes``)."""
    out: dict[str, float] = {}
    report = meta.get("report", {})
    for stage in report.get("stages", []):
        for key, value in (stage.get("error") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{stage['name']}.{key}"] = float(value)
    out.update({f"size.{k}": float(v) for k, v in report.get("sizes", {}).items()})
    files = [folder / artifact.META, *(folder / name for name in meta["files"])]
    out["artifact_bytes"] = float(sum(p.stat().st_size for p in files))
    return out


def _requirements(meta: dict) -> list[str]:
    """What loading needs: shiftc, the TVM that built the library (and the FFI it runs on), MLflow's
    client (pyfunc serving needs no more of MLflow), numpy and pandas (pyfunc imports it)."""
    installed = [f"{dist}=={importlib.metadata.version(dist)}" for dist in ("apache-tvm-ffi", "numpy", "pandas")]
    return [f"shiftc=={__version__}", f"apache-tvm=={meta['tvm_version']}", f"mlflow-skinny=={mlflow.__version__}", *installed]


def _verified(compiled) -> tuple[Path, dict, str]:
    """The artifact folder, its meta.json and id; refuses anything but a CompiledModel or a valid
    artifact folder, and a CompiledModel whose folder changed since it was loaded."""
    if isinstance(compiled, CompiledModel):
        folder = compiled.path
    elif isinstance(compiled, (str, Path)) and Path(compiled).is_dir():
        folder = Path(compiled)
    else:
        raise InputError(f"log_model needs a shiftc.CompiledModel or a compiled artifact folder, got {type(compiled).__name__} "
                         f"{str(compiled)[:80]!r}")
    aid = artifact.artifact_id(folder)
    meta = artifact.verify(folder, expect=aid)
    if isinstance(compiled, CompiledModel) and meta != compiled.meta:
        raise InputError(f"artifact {folder} changed since it was loaded; load it again before logging it")
    return folder, meta, aid


def log_model(compiled, artifact_path: str = "model", *, registered_model_name: str | None = None, **kwargs):
    """Log ``compiled`` (a ``CompiledModel`` or an artifact folder) to the active MLflow run as a
    ``pyfunc`` model named ``artifact_path``, with its id, report and metrics (module docstring).
    ``kwargs`` go to ``mlflow.pyfunc.log_model`` (e.g. ``input_example``, ``pip_requirements``).
    Returns MLflow's ``ModelInfo``."""
    folder, meta, aid = _verified(compiled)
    mlflow.log_dict(meta.get("report", {}), f"{artifact_path}/shiftc_report.json")
    mlflow.set_tags({"shiftc.artifact_id": aid, "shiftc.target": meta["target"]["name"]})
    params = {"artifact_id": aid, "target": meta["target"]["name"], "shiftc_version": meta["shiftc_version"],
              "tvm_version": meta["tvm_version"], **{f"option.{k}": v for k, v in meta.get("options", {}).items()}}
    kwargs.setdefault("pip_requirements", _requirements(meta))
    with tempfile.TemporaryDirectory(prefix="shiftc-mlflow-") as tmp:
        code = Path(tmp) / "shiftc_pyfunc.py"
        code.write_text(MODEL_CODE)
        info = mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(code),
            artifacts={ARTIFACT_KEY: str(folder)},
            model_config={"artifact_id": aid},
            signature=_signature(meta),
            registered_model_name=registered_model_name,
            params={k: str(v) for k, v in params.items()},
            **kwargs,
        )
    mlflow.log_metrics(metrics(meta, folder), model_id=info.model_id)
    return info
