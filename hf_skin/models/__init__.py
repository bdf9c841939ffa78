"""Model families of hf-skin, registered with the Auto classes, and `build_model(name)` behind `--model`."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel

from ..data import DX_LABELS
from .configuration_cnn import SkinCNNConfig
from .modeling_cnn import SkinCNNForImageClassification, SkinCNNModel

AutoConfig.register(SkinCNNConfig.model_type, SkinCNNConfig)
AutoModelForImageClassification.register(SkinCNNConfig, SkinCNNForImageClassification)

MODEL_NAMES = ("cnn",)


def label_maps() -> dict[str, dict]:
    """HAM10000's `id2label` / `label2id`: every hf-skin model uses exactly these."""
    return {"id2label": dict(enumerate(DX_LABELS)), "label2id": {label: i for i, label in enumerate(DX_LABELS)}}


def build_model(name: str, **config_kwargs) -> PreTrainedModel:
    """A freshly initialised model of family `name` (one of `MODEL_NAMES`), with HAM10000's labels.

    Args:
        name (`str`):
            The family, as given to `scripts/finetune.py --model`.
        config_kwargs:
            Overrides of the family's config defaults, e.g. `hidden_sizes=[32, 64, 128]`.
    """
    if name == "cnn":
        return SkinCNNForImageClassification(SkinCNNConfig(**config_kwargs, **label_maps()))
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")


__all__ = [
    "MODEL_NAMES",
    "SkinCNNConfig",
    "SkinCNNForImageClassification",
    "SkinCNNModel",
    "build_model",
    "label_maps",
]
