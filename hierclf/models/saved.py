"""A trained model's files: weights.safetensors and model.json, written atomically and read back
into the model they describe, on any device."""
from __future__ import annotations

from pathlib import Path

import timm
import torch

from hierclf.errors import RunError
from hierclf.models.factory import model_from_spec
from hierclf.models.spec import ModelSpec
from hierclf.run.files import load_weights, read_json, save_weights, write_text
from hierclf.run.fold_files import RETRAIN


def save_model(folder: Path, model: torch.nn.Module, spec: ModelSpec,
               state_dict: dict[str, torch.Tensor] | None = None) -> None:
    save_weights(folder / "weights.safetensors", state_dict if state_dict is not None else model.state_dict())
    write_text(folder / "model.json", spec.to_json())


def load_model(folder: Path, device: torch.device) -> tuple[torch.nn.Module, ModelSpec]:
    spec = ModelSpec.from_dict(read_json(folder / "model.json"), str(folder / "model.json"))
    if ":" in spec.arch or not timm.is_model(spec.arch):  # hf-hub:, local-dir: would reach out of the run
        where = " (a hub name: a saved run is rebuilt offline, from its own files)" if ":" in spec.arch else ""
        raise RunError(f"{folder}/model.json: arch {spec.arch!r} is no architecture timm has on this machine"
                       f"{where}; {RETRAIN}")
    model = model_from_spec(spec)
    try:
        model.load_state_dict(load_weights(folder / "weights.safetensors"))
    except RuntimeError as error:
        first = " ".join(str(error).split())[:300]
        raise RunError(f"{folder}/weights.safetensors does not fit its model.json ({first}); {RETRAIN}") from None
    return model.to(device).eval(), spec
