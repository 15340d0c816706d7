"""The trained models as MLflow pyfunc models: `mlflow.pyfunc.load_model("models:/compodiff-stage2@champion")`
answers composed queries with target embeddings, or with gallery ids when the index is attached.

Input: a DataFrame with ``reference`` (each row a raw CLIP image embedding) and ``instruction``; optional
``negative`` (text) and ``mask`` (a square 0/1 map, row-major, as a flat list). Params: ``k`` (> 0: top-k
gallery ids from the attached index instead of embeddings), and the sampler's ``w_image``, ``w_text``,
``steps``, ``seed``. The defaults are the params' ``benchmark`` section the model was evaluated with.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


def _masks(column) -> np.ndarray | None:
    if column is None or all(m is None for m in column):
        return None
    maps = []
    for i, m in enumerate(column):
        flat = np.zeros(1) if m is None else np.asarray(m, dtype=np.float32).ravel()
        side = int(round(np.sqrt(flat.size)))
        if side * side != flat.size:
            raise ValueError(f"mask of row {i} has {flat.size} values: not a square map")
        maps.append(flat.reshape(side, side))
    side = max(m.shape[0] for m in maps)
    return np.stack([np.zeros((side, side)) if m.size == 1 else m for m in maps])


class CompoDiffModel(mlflow.pyfunc.PythonModel):
    """The stage-2 denoiser with its CLIP text tower (and, optionally, the gallery index)."""

    def load_context(self, context) -> None:
        from compodiff.checkpoint import load_checkpoint
        from compodiff.encoders import load_encoder
        from compodiff.pipeline import CompoDiffPipeline

        art = context.artifacts
        self.settings = json.loads(Path(art["settings"]).read_text())
        encoder = load_encoder(f"local-dir:{art['encoder']}")
        self.pipe = CompoDiffPipeline(load_checkpoint(art["denoiser"]), encoder)
        self.index = None
        if "index" in art:
            from compodiff.retrieval import GalleryIndex

            self.index = GalleryIndex.load(Path(art["index"]) / "gallery.faiss")

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        s = {**self.settings, **(params or {})}
        missing = [c for c in ("reference", "instruction") if c not in model_input.columns]
        if missing:
            raise ValueError(f"composed queries need the column(s) {missing}; got {list(model_input.columns)}")
        ref = np.stack([np.asarray(r, dtype=np.float32) for r in model_input["reference"]])
        texts = [str(t) for t in model_input["instruction"]]
        negatives = [str(n) if n is not None else "" for n in model_input["negative"]] \
            if "negative" in model_input.columns else None
        masks = _masks(model_input["mask"] if "mask" in model_input.columns else None)
        target = self.pipe.compose(ref, texts, negatives, masks, w_image=float(s["w_image"]), w_text=float(s["w_text"]),
                                   steps=int(s["steps"]), seed=int(s["seed"]), eta=float(s["eta"]),
                                   mix_reference=float(s["mix_reference"])).numpy()
        k = int(s.get("k", 0))
        if k <= 0:
            return target
        if self.index is None:
            raise ValueError("k > 0 needs a gallery index, and this model was logged without one")
        # the encoder as the project names it (the bundled copy sits elsewhere): the index checks that name
        return self.index.search(target, k, self.settings["encoder"])[1]


class CombinerModel(mlflow.pyfunc.PythonModel):
    """The Combiner baseline with the CLIP text tower: (reference embedding, instruction) -> embedding."""

    def load_context(self, context) -> None:
        from compodiff.combiner import load_combiner
        from compodiff.encoders import load_encoder

        self.encoder = load_encoder(f"local-dir:{context.artifacts['encoder']}")
        self.combiner = load_combiner(context.artifacts["combiner"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        import torch

        ref = torch.from_numpy(np.stack([np.asarray(r, dtype=np.float32) for r in model_input["reference"]]))
        with torch.no_grad():
            return self.combiner(ref, self.encoder.encode_text([str(t) for t in model_input["instruction"]])).numpy()


def log_combiner(layout, name: str = "combiner"):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec(Array("float"), "reference"), ColSpec("string", "instruction")]))
    artifacts = {"combiner": str(layout.stage_dir("combiner") / "combiner.safetensors"),
                 "encoder": str(layout.encoder_dir)}
    return mlflow.pyfunc.log_model(name=name, python_model=CombinerModel(), artifacts=artifacts, pip_requirements=[],
                                   signature=signature)


def log_compodiff(layout, name: str = "compodiff", with_index: bool = True):
    """Log the stage-2 denoiser as a pyfunc model in the active MLflow run; returns the model info."""
    b = layout.params.benchmark
    settings = {"w_image": b.w_image, "w_text": b.w_text, "steps": b.steps, "seed": 0, "eta": b.eta,
                "mix_reference": b.mix_reference, "k": 0}
    with tempfile.TemporaryDirectory() as tmp:  # copied into the model: no step's output is touched
        path = Path(tmp) / "serving.json"
        path.write_text(json.dumps({**settings, "encoder": layout.params.encoder.model}))
        artifacts = {"denoiser": str(layout.stage_dir("stage2") / "denoiser.safetensors"),
                     "encoder": str(layout.encoder_dir), "settings": str(path)}
        if with_index and layout.faiss_index.is_file():
            artifacts["index"] = str(layout.faiss_index.parent)
        return mlflow.pyfunc.log_model(name=name, python_model=CompoDiffModel(), artifacts=artifacts,
                                       pip_requirements=[], signature=_signature(settings))


def _signature(settings: dict):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(Array("float"), "reference"), ColSpec("string", "instruction"),
                     ColSpec("string", "negative", required=False), ColSpec(Array("float"), "mask", required=False)])
    params = ParamSchema([ParamSpec(k, "double" if isinstance(v, float) else "long", v) for k, v in settings.items()])
    return ModelSignature(inputs=inputs, params=params)
