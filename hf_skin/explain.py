"""Explanation heatmaps: which parts of an image a prediction rests on, drawn over the image.

- Convolutional models (hf-skin's CNN, ResNet, ConvNeXt, timm's convolutional models such as EfficientNet-Lite, and
  the multi-input model over them): **Grad-CAM** (Selvaraju et al., 2017, through `pytorch-grad-cam`) on the
  backbone's feature map, its (B, C, h, w) `last_hidden_state`, for one class: the regions that raise that class's
  score.
- Vision transformers (ViT, and the multi-input model over it): **attention rollout** (Abnar & Zuidema, 2020), the
  CLS token's attention followed through every layer (residual connections included): where the model looks, for
  all classes at once.

```python
explanation = explain(SkinClassifier.from_pretrained("runs/demo"), "lesion.jpg")
explanation.overlay.save("heatmap.png")   # the photo with the map over the part the model sees
```
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

try:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError as err:  # an extra, with gradio: the Space's packages
    raise ImportError("hf_skin.explain needs grad-cam (pytorch-grad-cam): pip install 'hf-skin[space]'") from err

from .inference import SkinClassifier, display_name
from .models import backbone_of
from .processing import load_image

GRAD_CAM = "Grad-CAM"
ATTENTION_ROLLOUT = "attention rollout"

# Grad-CAM registers hooks on the (shared) model and reads what they caught: two explanations at once would mix.
_LOCK = threading.Lock()


@dataclass
class Explanation:
    """One explanation heatmap.

    Args:
        method (`str`): `GRAD_CAM` or `ATTENTION_ROLLOUT`.
        target (`str` or `None`): the label Grad-CAM explains; `None` for attention rollout, which is class-agnostic.
        heatmap (`np.ndarray`): (H, W) float32 in [0, 1] over `image`; 0 outside the part the model sees.
        image (`PIL.Image.Image`): the RGB image (EXIF rotation applied), at most `max_side` pixels on its long side.
        overlay (`PIL.Image.Image`): `image` with the heatmap blended over the part the model sees (red: high), that
            part outlined when the processor crops the image.
        probabilities (`dict[str, float]`): the prediction explained, as `SkinClassifier.predict` gives it (from the
            same forward pass as Grad-CAM's, so a caller needs no second one).
    """

    method: str
    target: str | None
    heatmap: np.ndarray
    image: Image.Image
    overlay: Image.Image
    probabilities: dict[str, float]

    @property
    def caption(self) -> str:
        """What the heatmap shows, in a sentence."""
        if self.method == GRAD_CAM:
            return (
                f"Grad-CAM for {display_name(self.target)}: red marks the regions that raised the model's score for "
                "this class."
            )
        return "Attention rollout: red marks the parts of the image the model attended to most (for all classes)."


def explanation_method(model: nn.Module) -> str:
    """`ATTENTION_ROLLOUT` for a ViT-style transformer backbone, `GRAD_CAM` for any other (`explain` raises a
    `ValueError` where its features turn out not to be a (B, C, h, w) map)."""
    config = getattr(backbone_of(model), "config", None)
    if hasattr(config, "num_attention_heads") and hasattr(config, "patch_size"):
        return ATTENTION_ROLLOUT
    return GRAD_CAM


def explain(
    classifier: SkinClassifier, image, target: str | None = None, max_side: int = 512, **metadata
) -> Explanation:
    """The explanation heatmap of `classifier`'s prediction for one image (path, bytes or PIL image).

    Args:
        classifier (`SkinClassifier`): any hf-skin checkpoint.
        image: the image, as `SkinClassifier.predict` takes it.
        target (`str`, *optional*): the label Grad-CAM explains; defaults to the most probable one. Attention rollout
            ignores it.
        max_side (`int`, *optional*, defaults to 512): the returned image's long side (never enlarged).
        metadata: age / sex / localization for multi-input models, as `SkinClassifier.predict` takes them.
    """
    image = load_image(image)
    model, method = classifier.model, explanation_method(classifier.model)
    with _LOCK:
        inputs = classifier.model_inputs(image, **metadata)
        if method == GRAD_CAM:
            backbone = backbone_of(model)
            if (layer := _FEATURE_LAYERS.get(backbone)) is None:  # found once per model, not per request
                layer = _FEATURE_LAYERS[backbone] = _feature_map_layer(backbone, inputs["pixel_values"])
            target_id = None if target is None else model.config.label2id[target]
            cam, logits = _grad_cam(model, layer, inputs, target_id)
            target = target or classifier.labels[int(logits.argmax())]  # Grad-CAM's default: the most probable
        else:
            with torch.inference_mode():
                logits = model(**inputs).logits[0]
            target, cam = None, _attention_rollout(backbone_of(model), inputs["pixel_values"])
    [probabilities] = classifier.ranked(logits[None].float().softmax(dim=-1).cpu())

    shown = image.copy()
    shown.thumbnail((max_side, max_side))
    left, top, right, bottom = (round(v) for v in _seen_box(classifier.image_processor, *shown.size))
    heatmap = np.zeros((shown.height, shown.width), dtype=np.float32)
    heatmap[top:bottom, left:right] = np.asarray(
        Image.fromarray(cam.astype(np.float32)).resize((right - left, bottom - top), Image.BILINEAR)
    ).clip(0, 1)
    pixels = np.asarray(shown, dtype=np.float32) / 255
    blended = pixels.copy()
    blended[top:bottom, left:right] = (
        show_cam_on_image(pixels[top:bottom, left:right], heatmap[top:bottom, left:right], use_rgb=True) / 255
    )
    overlay = Image.fromarray((blended * 255).round().astype(np.uint8))
    if (left, top, right, bottom) != (0, 0, shown.width, shown.height):
        ImageDraw.Draw(overlay).rectangle((left, top, right - 1, bottom - 1), outline="white", width=2)
    return Explanation(
        method=method, target=target, heatmap=heatmap, image=shown, overlay=overlay, probabilities=probabilities
    )


# backbone -> the module that outputs its feature map: it depends on the model alone; finding it costs a forward.
_FEATURE_LAYERS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _feature_map_layer(backbone: nn.Module, pixel_values: torch.Tensor) -> nn.Module:
    """The module that outputs the backbone's feature map: its `last_hidden_state` (what every transformers vision
    model, hf-skin's CNN and TimmWrapperModel return), or what timm's `forward_features` returns for a timm model
    itself (the base model of TimmWrapperForImageClassification). Found by watching one forward pass."""
    outputs = []  # (module, its output) in the order they finish; weak, so that the pass frees what it is done with

    def note(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs.append((module, weakref.ref(output)))

    hooks = [module.register_forward_hook(note) for module in backbone.modules() if module is not backbone]
    try:
        with torch.no_grad():
            if hasattr(backbone, "forward_features") and hasattr(backbone, "pretrained_cfg"):  # a timm model
                features = backbone.forward_features(pixel_values)
            else:
                features = backbone(pixel_values=pixel_values).last_hidden_state
    finally:
        for hook in hooks:
            hook.remove()
    # The last module to return the map: the outermost of those that pass it on as it is, after any in-place op.
    layer = next((module for module, output in reversed(outputs) if output() is features), None)
    if features.ndim != 4 or layer is None:
        raise ValueError(
            f"no explanation method for a {type(backbone).__name__} backbone: Grad-CAM needs a (batch, channels, "
            f"height, width) feature map output by one of its modules, it gives {tuple(features.shape)}; "
            "hf_skin.explain knows convolutional backbones and ViT-style transformers (attention rollout)"
        )
    return layer


class _Logits(nn.Module):
    """`model(pixel_values) -> logits`, as pytorch-grad-cam calls it: transformers models return a `ModelOutput`,
    and the multi-input model needs its metadata too."""

    def __init__(self, model: nn.Module, other_inputs: dict[str, torch.Tensor]):
        super().__init__()
        self.model, self.other_inputs = model, other_inputs

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, **self.other_inputs).logits


def _grad_cam(
    model: nn.Module, layer: nn.Module, inputs: dict[str, torch.Tensor], target_id: int | None
) -> tuple[np.ndarray, torch.Tensor]:
    """(h, w) Grad-CAM of `layer`'s output over the model's input, in [0, 1], for `target_id` (`None`: the most
    probable class), and the logits of the forward pass it ran."""
    inputs = dict(inputs)
    # Gradients must reach the feature map even where the backbone is frozen (requires_grad=False).
    pixel_values = inputs.pop("pixel_values").clone().requires_grad_(True)
    targets = None if target_id is None else [ClassifierOutputTarget(target_id)]
    with torch.enable_grad(), GradCAM(_Logits(model, inputs), [layer]) as cam:
        heatmap = cam(pixel_values, targets=targets)[0]
        logits = cam.outputs[0].detach()
    model.zero_grad(set_to_none=True)
    return heatmap, logits


@torch.inference_mode()
def _attention_rollout(backbone: nn.Module, pixel_values: torch.Tensor) -> np.ndarray:
    """(h, w) attention rollout over the model's input, in [0, 1]."""
    if backbone.config._attn_implementation != "eager":
        # Only eager attention returns its weights; its outputs are the same as sdpa's.
        backbone.set_attn_implementation("eager")
    attentions = backbone(pixel_values=pixel_values, output_attentions=True).attentions  # L × (1, heads, T, T)
    tokens = attentions[0].shape[-1]
    rollout = torch.eye(tokens)
    for attention in attentions:
        mixed = 0.5 * attention[0].float().mean(dim=0).cpu() + 0.5 * torch.eye(tokens)  # heads averaged + residual
        rollout = (mixed / mixed.sum(dim=-1, keepdim=True)) @ rollout
    height, width = pixel_values.shape[-2:]
    patch = backbone.config.patch_size
    patch_h, patch_w = (patch, patch) if isinstance(patch, int) else patch
    grid_h, grid_w = height // patch_h, width // patch_w
    # The CLS token's row over the patch tokens, which come last (after CLS and any distillation token).
    cls_to_patches = rollout[0, -grid_h * grid_w :].reshape(1, 1, grid_h, grid_w)
    heatmap = nn.functional.interpolate(cls_to_patches, size=(height, width), mode="bilinear")[0, 0]
    heatmap = heatmap - heatmap.min()
    return (heatmap / heatmap.max().clamp_min(1e-12)).numpy()


def _seen_box(image_processor, width: int, height: int) -> tuple[float, float, float, float]:
    """The part of a `width`×`height` image that `image_processor` hands the model, as (left, top, right, bottom).

    hf-skin's own processors and ViT's resize the whole image; ResNet's (ConvNeXt's, below 384 px) resizes the
    short side to `shortest_edge / crop_pct` and crops the centre; others may `do_center_crop` after resizing.
    """
    size = image_processor.size
    shortest, keep_w, keep_h = size.get("shortest_edge"), 1.0, 1.0
    crop_pct = getattr(image_processor, "crop_pct", None)
    if shortest and crop_pct and shortest < 384:
        keep_w, keep_h = min(width, height) * crop_pct / width, min(width, height) * crop_pct / height
    elif getattr(image_processor, "do_center_crop", False):
        crop = image_processor.crop_size
        if shortest:
            scale = shortest / min(width, height)
            keep_w, keep_h = crop["width"] / (width * scale), crop["height"] / (height * scale)
        else:
            keep_w, keep_h = crop["width"] / size["width"], crop["height"] / size["height"]
    keep_w, keep_h = min(keep_w, 1.0), min(keep_h, 1.0)
    return (
        width * (1 - keep_w) / 2,
        height * (1 - keep_h) / 2,
        width * (1 + keep_w) / 2,
        height * (1 + keep_h) / 2,
    )


__all__ = ["ATTENTION_ROLLOUT", "GRAD_CAM", "Explanation", "explain", "explanation_method"]
