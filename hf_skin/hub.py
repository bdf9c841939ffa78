"""The Hugging Face Hub side of hf-skin: dataset card, dataset preparation and push; model card and push of a
finished training run (`scripts/push_to_hub.py`, `scripts/finetune.py --push_to_hub`).

The token is never an argument that gets logged or written: it comes from `HF_TOKEN`, `hf auth login` or an explicit
`token=`, and goes only into the HTTP headers of `huggingface_hub`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, DatasetDict, Image, Value
from datasets.table import embed_table_storage
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    get_token,
)
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id

from .data import DX_LABELS, DX_NAMES, MALIGNANT_DX
from .evaluation import markdown_table
from .metrics import HAM10000_CITATION
from .runs import RUN_ARGS_FILE, RunFolder

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Tokens and repo ids


def hub_token(token: str | None = None) -> str:
    """`token`, else `HF_TOKEN`, else the `hf auth login` token; a clear error when there is none."""
    token = token or get_token()
    if not token:
        raise LocalTokenNotFoundError(
            "no Hugging Face token found: set HF_TOKEN to a write token (https://huggingface.co/settings/tokens) or "
            "run `hf auth login`, then push again"
        )
    return token


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid Hub repo id (`user/name`, `org/name` or `name`), else a clear `ValueError`."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"{repo_id!r} is not a valid Hub repo id: {err} Use 'user/name' or 'org/name' (letters, digits, '-', '_' "
            "and '.'; at most 96 characters)."
        ) from err
    return repo_id


# ----------------------------------------------------------------------------------------------------------------
# Dataset card


MASKS_CITATION = """@article{tschandl2020humancomputer,
  title   = {Human--computer collaboration for skin cancer recognition},
  author  = {Tschandl, Philipp and Rinner, Christoph and Apalla, Zoe and others},
  journal = {Nature Medicine},
  volume  = {26},
  pages   = {1229--1234},
  year    = {2020},
  doi     = {10.1038/s41591-020-0942-0}
}"""

FEATURE_DESCRIPTIONS = {
    "image": "the dermatoscopic image",
    "image_id": "ISIC image id, e.g. `ISIC_0024306`",
    "lesion_id": "HAM10000 lesion id: several images can show the same lesion",
    "dx": "the diagnosis, the label to predict (see the class table below)",
    "dx_type": "how the diagnosis was established: histopathology, follow-up, expert consensus or confocal microscopy",
    "age": "age of the patient in years (5-year steps); null where not recorded",
    "sex": "sex of the patient; `unknown` where not recorded",
    "localization": "body site of the lesion; `unknown` where not recorded",
    "mask": "binary lesion segmentation (0 background, 255 lesion), published by Tschandl et al. (2020)",
}

PLOT_CAPTIONS = {
    "class_counts": "Images per diagnosis and split",
    "age_by_dx": "Age by diagnosis",
    "sex_by_dx": "Sex by diagnosis",
    "localization_by_dx": "Body site by diagnosis",
    "missing_values": "Missing metadata",
}


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return name
    return "100K<n<1M"


def _feature_type(feature) -> str:
    if isinstance(feature, ClassLabel):
        return f"`ClassLabel` ({feature.num_classes} classes)"
    if isinstance(feature, Value):
        return f"`Value({feature.dtype})`"
    if isinstance(feature, Image):
        return "`Image`"
    return f"`{type(feature).__name__}`"


def _lesions_in_several_splits(dataset_dict: DatasetDict) -> int | None:
    if not all("lesion_id" in ds.column_names for ds in dataset_dict.values()):
        return None
    seen: dict[str, str] = {}
    shared = set()
    for split, ds in dataset_dict.items():
        for lesion in set(ds["lesion_id"]):
            if seen.setdefault(lesion, split) != split:
                shared.add(lesion)
    return len(shared)


def _class_table(dataset_dict: DatasetDict) -> str:
    splits = list(dataset_dict)
    names = dataset_dict[splits[0]].features["dx"].names
    counts = {split: [0] * len(names) for split in splits}
    for split, ds in dataset_dict.items():
        for label in ds["dx"]:
            counts[split][label] += 1
    lines = [
        "| dx | diagnosis | malignant | " + " | ".join(splits) + " | total |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in splits) + " | ---: |",
    ]
    for i, dx in enumerate(names):
        row = [counts[split][i] for split in splits]
        malignant = "yes" if dx in MALIGNANT_DX else "no"
        cells = " | ".join(f"{n:,}" for n in [*row, sum(row)])
        lines.append(f"| {dx} | {DX_NAMES.get(dx, dx)} | {malignant} | {cells} |")
    totals = [dataset_dict[split].num_rows for split in splits]
    lines.append("| **all** | | | " + " | ".join(f"**{n:,}**" for n in [*totals, sum(totals)]) + " |")
    if all("lesion_id" in ds.column_names for ds in dataset_dict.values()):
        lesions = [set(dataset_dict[split]["lesion_id"]) for split in splits]
        cells = " | ".join(f"{len(ids):,}" for ids in [*lesions, set().union(*lesions)])
        lines.append(f"| lesions | | | {cells} |")
    return "\n".join(lines)


def dataset_card(
    dataset_dict: DatasetDict,
    *,
    repo_id: str | None = None,
    source_description: str,
    split_description: str,
    plots: dict[str, str] | None = None,
) -> DatasetCard:
    """The dataset card (README.md) of a prepared HAM10000 `DatasetDict`.

    Every number in it (class counts, split sizes, lesions shared between splits) is computed from `dataset_dict`.

    Args:
        dataset_dict (`DatasetDict`): as `hf_skin.data.load_ham10000` returns it.
        repo_id (`str`, *optional*): the Hub dataset repo, for the usage snippet.
        source_description (`str`): where the images and metadata came from (markdown).
        split_description (`str`): how the splits were made: method, seed, sizes (markdown).
        plots (`dict[str, str]`, *optional*):
            figure name (`plot_data_analysis`'s keys) -> path relative to the card, e.g. `plots/class_counts.png`.
    """
    splits = list(dataset_dict)
    features = dataset_dict[splits[0]].features
    n_images = sum(ds.num_rows for ds in dataset_dict.values())
    has_lesions = all("lesion_id" in ds.column_names for ds in dataset_dict.values())
    n_lesions = len({lesion for ds in dataset_dict.values() for lesion in ds["lesion_id"]}) if has_lesions else None
    card_data = DatasetCardData(
        license="cc-by-nc-4.0",
        pretty_name="HAM10000 (lesion-grouped splits)",
        task_categories=["image-classification"],
        task_ids=["multi-class-image-classification"],
        annotations_creators=["expert-generated"],
        size_categories=[_size_category(n_images)],
        tags=["medical", "dermatology", "skin-lesion", "ham10000", "dermoscopy"],
    )

    lesions_text = f" of {n_lesions:,} lesions" if n_lesions is not None else ""
    shared = _lesions_in_several_splits(dataset_dict)
    if shared is None:
        overlap = "This copy has no `lesion_id` column, so whether splits share lesions cannot be checked."
    elif shared == 0:
        overlap = (
            "**No lesion appears in more than one split** (checked on this copy). This matters because HAM10000 holds "
            "several images of many lesions: a random split by image puts images of the same lesion in train and "
            "test, and the model is then partly scored on lesions it has seen, which inflates its accuracy."
        )
    else:
        overlap = (
            f"**Warning: {shared:,} {'lesion has' if shared == 1 else 'lesions have'} images in more than one "
            "split.** HAM10000 holds several images of many lesions, so scores on these splits overestimate how a "
            "model does on unseen lesions."
        )
    features_table = "\n".join(
        ["| column | type | description |", "| --- | --- | --- |"]
        + [f"| `{name}` | {_feature_type(f)} | {FEATURE_DESCRIPTIONS.get(name, '')} |" for name, f in features.items()]
    )
    plots_text = (
        "\n\n".join(f"![{PLOT_CAPTIONS.get(name, name)}]({path})" for name, path in (plots or {}).items())
        or "_No plots were generated for this copy._"
    )
    subset = ", a subset of the release" if n_images < 10_015 else ""
    image_size = ""
    if "image" in features and n_images:
        first = dataset_dict[next(split for split in splits if dataset_dict[split].num_rows)][0]["image"]
        image_size = f" The first image is {first.width}×{first.height} pixels (the release's are 600×450)."
    load_target = repo_id or "path/to/this/folder"
    mask_citation = f"\n\nThe lesion masks:\n\n```bibtex\n{MASKS_CITATION}\n```" if "mask" in features else ""

    body = f"""# HAM10000, lesion-grouped splits

HAM10000 ("Human Against Machine with 10000 training images", Tschandl et al. 2018) is a collection of 10,015
dermatoscopic images of 7,470 pigmented skin lesions, gathered over 20 years at the Department of Dermatology of the
Medical University of Vienna (Austria) and at the skin cancer practice of Cliff Rosendahl in Queensland (Australia).
Each image carries one of seven diagnoses; more than half were confirmed by histopathology, the rest by follow-up,
expert consensus or in-vivo confocal microscopy. It was the training set of the ISIC 2018 challenge (task 3).

This copy holds **{n_images:,} images{lesions_text}**{subset}.{image_size} Source: {source_description}
Prepared with hf-skin (`hf_skin.data.load_ham10000`, `scripts/prepare_dataset.py`).

## Usage

```python
from hf_skin.data import load_ham10000  # or: datasets.load_dataset / datasets.load_from_disk

ds = load_ham10000("{load_target}")
```

## Features

{features_table}

## Classes and splits

{_class_table(dataset_dict)}

{split_description}

{overlap}

## Data analysis

{plots_text}

## License

[CC BY-NC 4.0](https://creativecommons.org/licenses/by-nc/4.0/), as the original HAM10000 release: **non-commercial
use only**, with attribution (cite the paper below).

## Limitations and biases

- **Dermoscopic images only**, taken with dermatoscopes in specialist settings: a model trained on them says little
  about smartphone or clinical close-up photographs.
- **Population**: patients of a Viennese clinic and an Australian practice, mostly fair-skinned people of European
  descent. Performance on darker skin types is unknown and likely worse.
- **Seven classes, heavily imbalanced**: melanocytic nevi (nv) are about two thirds of the images, dermatofibroma (df)
  and vascular lesions (vasc) about 1% each; accuracy is dominated by nv, so report balanced accuracy or macro-F1.
  Many skin conditions are not among the seven classes at all.
- **`dx_type` leaks the label**: in HAM10000 every `follow_up` image is a nevus and every akiec, bcc and mel image
  was confirmed by histopathology, so `dx_type` alone narrows the diagnosis; never use it as a model input.
- Ages are rounded to 5 years (a few are 0, plausibly unrecorded); some ages, sexes and body sites are missing (see
  the plots).
- Not a medical device: for research and education, not for diagnosing anyone.

## Citation

Tschandl P., Rosendahl C., Kittler H. *The HAM10000 dataset, a large collection of multi-source dermatoscopic images
of common pigmented skin lesions.* Sci. Data 5, 180161 (2018), doi:10.1038/sdata.2018.161.

```bibtex
{HAM10000_CITATION}
```{mask_citation}
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def push_dataset_to_hub(
    dataset_dict: DatasetDict,
    repo_id: str,
    *,
    card: DatasetCard,
    plots_dir: str | Path | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Pushes a prepared HAM10000 `DatasetDict` to a Hub dataset repo: parquet shards, card, data-analysis plots.

    The card and `plots/*.png` go first; `DatasetDict.push_to_hub` then adds its own `dataset_info` and `configs`
    metadata to that README rather than our card overwriting them afterwards (the Hub needs `configs` to map splits).

    Args:
        dataset_dict (`DatasetDict`): the splits to push.
        repo_id (`str`): `user/name` or `org/name` of the dataset repo (created when missing).
        card (`DatasetCard`): the README, e.g. from `dataset_card`.
        plots_dir (`str` or `Path`, *optional*): folder whose `*.png` files are uploaded under `plots/`.
        private (`bool`, *optional*, defaults to `False`): visibility of the repo if this call creates it.
        token (`str`, *optional*): defaults to `HF_TOKEN` or the `hf auth login` token; never logged or written.

    Returns:
        `str`: the URL of the dataset repo.
    """
    api = HfApi(token=hub_token(token))
    repo_url = api.create_repo(check_repo_id(repo_id), repo_type="dataset", private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        card.save(staging / "README.md")
        pngs = sorted(Path(plots_dir).glob("*.png")) if plots_dir else []
        if pngs:
            (staging / "plots").mkdir()
        for png in pngs:
            shutil.copy2(png, staging / "plots" / png.name)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=staging,
            commit_message="Dataset card and data-analysis plots",
        )
    dataset_dict.push_to_hub(repo_id, private=private, token=api.token, commit_message="HAM10000 splits (parquet)")
    logger.info("Pushed the dataset to %s", repo_url)
    return str(repo_url)


# ----------------------------------------------------------------------------------------------------------------
# Dataset preparation (scripts/prepare_dataset.py)


@dataclass
class DatasetPreparationArguments:
    """Arguments of `prepare_dataset` and `scripts/prepare_dataset.py`."""

    source: str = field(
        metadata={"help": "HAM10000 raw download folder, a folder written by this script, or a Hub dataset id."}
    )
    output_dir: str = field(metadata={"help": "Where to write the dataset, plots/ and README.md."})
    format: str = field(
        default="disk",
        metadata={"help": "'disk' (datasets.save_to_disk) or 'parquet' (one {split}.parquet file per split)."},
    )
    test_size: float = field(default=0.15, metadata={"help": "Share of the lesions in the test split."})
    validation_size: float = field(default=0.15, metadata={"help": "Share of the lesions in the validation split."})
    seed: int = field(default=42, metadata={"help": "Seed of the lesion-grouped, diagnosis-stratified split."})
    resplit: bool = field(
        default=True, metadata={"help": "Split again even when the source already has train/validation/test."}
    )
    on_missing: str = field(
        default="error", metadata={"help": "Metadata rows whose image file is missing: 'error' or 'skip'."}
    )
    with_masks: bool = field(default=True, metadata={"help": "Add the lesion masks when the source has them."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache of built raw folders; defaults to $HF_SKIN_CACHE or ~/.cache/hf_skin."}
    )
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push to this Hub dataset repo (user/name)."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    hub_token: str | None = field(
        default=None,
        repr=False,  # never printed with the arguments
        metadata={"help": "Hub token; defaults to HF_TOKEN or the `hf auth login` token."},
    )

    def __post_init__(self):
        if self.format not in ("disk", "parquet"):
            raise ValueError(f"format must be 'disk' or 'parquet', got {self.format!r}")
        if not (0 < self.test_size < 1 and 0 < self.validation_size < 1 and self.test_size + self.validation_size < 1):
            raise ValueError(
                f"test_size ({self.test_size}) and validation_size ({self.validation_size}) must be in (0, 1) and sum "
                "to less than 1"
            )


def _describe_source(source: str) -> str:
    path = Path(source)
    if (path / "HAM10000_metadata.csv").is_file():
        return (
            "a local copy of the HAM10000 release as downloaded (`HAM10000_metadata.csv` and the image folders, "
            "Harvard Dataverse / Kaggle layout)."
        )
    if path.exists():
        return "a previously prepared copy (parquet or `save_to_disk` folder)."
    return f"the Hub dataset [`{source}`](https://huggingface.co/datasets/{source})."


def _save(dataset_dict: DatasetDict, output_dir: Path, format: str) -> list[Path]:
    if format == "disk":
        dataset_dict.save_to_disk(output_dir)  # embeds image files: the folder stands alone
        return [output_dir / "dataset_dict.json", *(output_dir / split for split in dataset_dict)]
    for split, ds in dataset_dict.items():
        # to_parquet writes Image columns as stored, possibly as file paths: embed the bytes first, as push_to_hub does
        embedded = ds.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True, desc=split)
        embedded.with_format(None).to_parquet(output_dir / f"{split}.parquet")
    return [output_dir / f"{split}.parquet" for split in dataset_dict]


def prepare_dataset(args: DatasetPreparationArguments) -> dict[str, object]:
    """Loads HAM10000, splits it, and writes the dataset, `plots/*.png` and a `README.md` card into `output_dir`.

    Pushes everything to `args.push_to_hub` when set.

    Returns:
        `dict`: `dataset` (the `DatasetDict`), `data_files` (what `save_to_disk` or `to_parquet` wrote),
        `card_path`, `plots` (name -> PNG path) and `url` (the Hub repo, or `None`).
    """
    from .data import load_ham10000
    from .plots import plot_data_analysis

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset_dict = load_ham10000(
        args.source,
        test_size=args.test_size,
        validation_size=args.validation_size,
        seed=args.seed,
        resplit=args.resplit,
        on_missing=args.on_missing,
        with_masks=args.with_masks,
        cache_dir=args.cache_dir,
    )
    data_files = _save(dataset_dict, output_dir, args.format)
    plots = plot_data_analysis(dataset_dict, output_dir / "plots")

    sizes = ", ".join(f"{split} {ds.num_rows:,} images" for split, ds in dataset_dict.items())
    if args.resplit:
        split_description = (
            f"Splits were made by `hf_skin.data.load_ham10000` with seed {args.seed}: whole lesions, not images, "
            f"are assigned to a split, stratified by diagnosis, with about {args.test_size:.0%} of the lesions in "
            f"test and {args.validation_size:.0%} in validation ({sizes})."
        )
    else:
        split_description = f"The splits are the source's own ({sizes})."
    card = dataset_card(
        dataset_dict,
        repo_id=args.push_to_hub,
        source_description=_describe_source(args.source),
        split_description=split_description,
        plots={name: path.relative_to(output_dir).as_posix() for name, path in plots.items()},
    )
    card_path = output_dir / "README.md"
    card.save(card_path)

    url = None
    if args.push_to_hub:
        url = push_dataset_to_hub(
            dataset_dict,
            args.push_to_hub,
            card=card,
            plots_dir=output_dir / "plots",
            private=args.private,
            token=args.hub_token,
        )
    return {"dataset": dataset_dict, "data_files": data_files, "card_path": card_path, "plots": plots, "url": url}


# ----------------------------------------------------------------------------------------------------------------
# Model card of a finished training run

MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card_template.md")
# What a pushed run holds: weights, configs, processor, modeling code (trust_remote_code), metrics, figures.
PUSHED_SUFFIXES = (".safetensors", ".json", ".py", ".png")
# Below this many test images, a class's per-class numbers are too uncertain to lean on (said so in the card).
SMALL_SUPPORT = 30
FAMILY_NAMES = {
    "hf_skin_cnn": "the HAM10000 study's CNN (`SkinCNN`)",
    "hf_skin_multi_input": "a multi-input model (`SkinMultiInput`)",
    "resnet": "ResNet",
    "vit": "Vision Transformer (ViT)",
    "timm_wrapper": "a timm model",
}
HEADLINE_METRICS = (
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy (mean recall)"),
    ("f1_macro", "Macro F1"),
    ("f1_weighted", "Weighted F1"),
    ("auc_macro", "Macro ROC-AUC (one-vs-rest)"),
    ("mel_sensitivity_at_spec90", "Melanoma sensitivity at 90% specificity"),
    ("mel_sensitivity_at_spec80", "Melanoma sensitivity at 80% specificity"),
    ("ece", "Expected calibration error (lower is better)"),
)
# model-index entries, in the metric ids the Hub knows: (key in test_metrics.json, type, name, args)
MODEL_INDEX_METRICS = (
    ("accuracy", "accuracy", "Accuracy", None),
    ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy", None),
    ("f1_macro", "f1", "Macro F1", {"average": "macro"}),
)
HYPERPARAMETERS = (  # (argument, shown as); shown when set to something other than nothing, off or NEUTRAL
    ("model", "model family"),
    ("model_name_or_path", "base checkpoint"),
    ("backbone", "backbone (multi-input)"),
    ("metadata_fields", "metadata (multi-input)"),
    ("config_overrides", "config overrides"),
    ("freeze_backbone", "frozen backbone"),
    ("num_train_epochs", "epochs"),
    ("max_steps", "max steps"),
    ("per_device_train_batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation steps"),
    ("learning_rate", "learning rate"),
    ("backbone_learning_rate_multiplier", "backbone learning-rate multiplier"),
    ("optim", "optimizer"),
    ("weight_decay", "weight decay"),
    ("lr_scheduler_type", "learning-rate schedule"),
    ("warmup_steps", "warmup"),
    ("step_decay_epochs", "step decay every (epochs)"),
    ("step_decay_gamma", "step decay factor"),
    ("balance", "class balancing"),
    ("balance_power", "balancing power"),
    ("augment", "augmentation"),
    ("early_stopping_patience", "early stopping patience"),
    ("metric_for_best_model", "checkpoint chosen by (validation)"),
    ("bf16", "bf16"),
    ("fp16", "fp16"),
    ("seed", "seed"),
    ("max_train_samples", "train images used (subset)"),
    ("max_eval_samples", "validation/test images used (subset)"),
)
NEUTRAL = {"backbone_learning_rate_multiplier": 1.0, "gradient_accumulation_steps": 1, "max_steps": -1}
# Shown only together with the argument they qualify.
QUALIFIES = {"step_decay_gamma": "step_decay_epochs", "balance_power": "balance"}
# Not shown when the other argument is set: step decay replaces the named schedule.
REPLACED_BY = {"lr_scheduler_type": "step_decay_epochs"}


def read_run(run_dir: str | os.PathLike) -> RunFolder:
    """The finished run in `run_dir` (saved model, test metrics), or an error that says what the folder lacks."""
    return RunFolder(run_dir).require_finished()


def _is_hub_id(name: str | None) -> bool:
    if not name or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name


def _base_model(args: dict[str, Any] | None) -> str | None:
    """The pretrained checkpoint a run started from (Hub id or local path), `None` for a model trained from scratch."""
    from .models import PRETRAINED_CHECKPOINTS

    if not args:
        return None
    model, given = args.get("model"), args.get("model_name_or_path")
    if model == "multi-input":
        backbone = args.get("backbone")
        return given if given or backbone == "pretrained" else PRETRAINED_CHECKPOINTS.get(backbone)
    return given or PRETRAINED_CHECKPOINTS.get(model)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _parameter_count(run_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in run_dir.glob("*.safetensors"):
        with safe_open(path, framework="numpy") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return total


def _family(config: dict) -> str:
    family = _cnn_name(config) if config.get("model_type") == "hf_skin_cnn" else None
    family = family or FAMILY_NAMES.get(config.get("model_type"), f"`{(config.get('architectures') or ['?'])[0]}`")
    if config.get("model_type") == "timm_wrapper":
        family = f"timm's `{config.get('architecture')}` (loads as `TimmWrapperForImageClassification`; needs `timm`)"
    if config.get("model_type") == "hf_skin_multi_input":
        backbone_config = config.get("backbone_config", {})
        backbone = backbone_config.get("model_type")
        backbone_name = _cnn_name(backbone_config) if backbone == "hf_skin_cnn" else None
        fields = ", ".join(config.get("metadata_fields", []))
        family += (
            f" that reads {fields} beside the image, over {backbone_name or FAMILY_NAMES.get(backbone, backbone)} "
            "as backbone"
        )
    return family


def _cnn_name(config: dict) -> str:
    """The study's CNN when the config is the study's (32 px, conv 32 -> conv 64, flatten), else what differs."""
    from .models import SkinCNNConfig

    study = SkinCNNConfig().to_dict()
    keys = ("image_size", "hidden_sizes", "convs_per_stage", "normalization", "downsample", "head", "dropout")
    changed = [f"{key} {config[key]}" for key in keys if key in config and config[key] != study[key]]
    if not changed:
        return FAMILY_NAMES["hf_skin_cnn"]
    return f"hf-skin's CNN (`SkinCNN`; the study's CNN with {', '.join(changed)})"


def _input_description(run_dir: Path) -> str:
    processor = RunFolder(run_dir).read_json("preprocessor_config.json") or {}
    size = processor.get("size") or {}
    height, width = size.get("height"), size.get("width")
    side = size.get("shortest_edge")
    if height and width:
        text = f"{width}×{height} pixels (width × height), the whole image resized"
    else:
        text = f"{side}×{side} pixels" if side else "the model's input size"
    metadata = RunFolder(run_dir).read_json("metadata_processor.json")
    if metadata:
        text += "; age, sex and body site as a person types them, anything missing or not understood as unknown"
    return text


def _usage(repo_id: str, config: dict) -> str:
    custom = config.get("model_type", "").startswith("hf_skin")
    if config.get("model_type") == "hf_skin_multi_input":
        lines = [
            "from hf_skin.inference import SkinClassifier  # needs hf-skin installed",
            "",
            f'classifier = SkinClassifier.from_pretrained("{repo_id}")',
            'classifier.predict("lesion.jpg", age="45", sex="female", localization="back")',
        ]
    else:
        lines = [
            "from transformers import pipeline",
            "",
            f'classifier = pipeline("image-classification", model="{repo_id}"{", trust_remote_code=True" * custom})',
            'classifier("lesion.jpg")  # [{"label": "nv", "score": ...}, ...]',
        ]
    if custom:
        lines += [
            "",
            "# The modeling code is in this repository: without hf-skin installed, trust_remote_code=True loads it",
            "from transformers import AutoModelForImageClassification",
            "",
            f'model = AutoModelForImageClassification.from_pretrained("{repo_id}", trust_remote_code=True)',
        ]
    return "\n".join(lines)


def _labels_table(config: dict, test_metrics: dict) -> str:
    id2label = config.get("id2label") or dict(enumerate(DX_LABELS))
    rows = []
    for i in sorted(id2label, key=int):
        dx = id2label[i]
        support = test_metrics.get("per_class", {}).get(dx, {}).get("support", "")
        rows.append([i, dx, DX_NAMES.get(dx, dx), "yes" if dx in MALIGNANT_DX else "no", support])
    return markdown_table(["id", "label", "diagnosis", "malignant", "test images"], rows, align="rlllr")


def _metrics_table(test_metrics: dict, validation_metrics: dict | None) -> str:
    header = ["metric", "test"] + (["validation"] if validation_metrics else [])
    rows = [
        [name, _fmt(test_metrics[key])]
        + ([_fmt(validation_metrics.get(key, float("nan")))] if validation_metrics else [])
        for key, name in HEADLINE_METRICS
        if key in test_metrics
    ]
    return markdown_table(header, rows)


def _per_class_table(test_metrics: dict) -> str:
    keys = ("precision", "recall", "specificity", "f1", "auc")
    rows = [
        [dx, DX_NAMES.get(dx, dx), *(_fmt(m[key]) for key in keys), m["support"]]
        for dx, m in test_metrics.get("per_class", {}).items()
    ]
    header = ["class", "diagnosis", "precision", "recall", "specificity", "F1", "AUC", "support"]
    return markdown_table(header, rows, align="llrrrrrr")


def _rare_classes(test_metrics: dict) -> str:
    supports = {dx: m["support"] for dx, m in test_metrics.get("per_class", {}).items()}
    total = sum(supports.values())
    small = sorted((n, dx) for dx, n in supports.items() if n < SMALL_SUPPORT)
    counts = ", ".join(f"{DX_NAMES.get(dx, dx)} ({dx}) {n}" for n, dx in sorted((n, dx) for dx, n in supports.items()))
    text = f"The test split holds {total:,} images: {counts}."
    if small:
        listed = ", ".join(dx for _, dx in small)
        text += (
            f" With fewer than {SMALL_SUPPORT} test images, the per-class numbers of {listed} rest on a handful of "
            "lesions and could be far off in either direction."
        )
    return text


def _hyperparameters_table(args: dict[str, Any] | None) -> str:
    if not args:
        return f"_This run has no `{RUN_ARGS_FILE}` (it predates it): its hyperparameters were not recorded._"
    lines = ["| hyperparameter | value |", "| --- | --- |"]
    for key, name in HYPERPARAMETERS:
        value = args.get(key)
        if value in (None, False, 0, [], {}, "", "none") or value == NEUTRAL.get(key):
            continue
        if key in QUALIFIES and args.get(QUALIFIES[key]) in (None, 0, "none"):
            continue
        if key in REPLACED_BY and args.get(REPLACED_BY[key]) not in (None, 0):
            continue
        if key in ("backbone", "metadata_fields") and args.get("model") != "multi-input":
            continue
        if key == "model_name_or_path" and not _is_hub_id(value):
            value = f"a local checkpoint ({Path(value).name})"
        if isinstance(value, (list, dict)):
            value = json.dumps(value)
        lines.append(f"| {name} | `{value}` |")
    lines.append("")
    lines.append(f"Every argument of the run is in `{RUN_ARGS_FILE}`: `python scripts/finetune.py {RUN_ARGS_FILE}`.")
    return "\n".join(lines)


def _split_description(args: dict[str, Any] | None, run: RunFolder) -> str:
    test_n = sum(m["support"] for m in run.test_metrics.get("per_class", {}).values())
    sizes = f"the test split has {test_n:,} images"
    if run.validation_metrics:
        val_n = sum(m["support"] for m in run.validation_metrics.get("per_class", {}).values())
        sizes = f"the validation split has {val_n:,} images and {sizes}"
    if not args:
        return f"Lesion-grouped splits by hf-skin ({sizes}); the seed was not recorded."
    return (
        f"HAM10000 holds several images of many lesions, so the data was split **by lesion**, not by image: every "
        f"image of a lesion is in the same split, so the model is never tested on a lesion it saw in training. The "
        f"split is stratified by diagnosis (`hf_skin.data.load_ham10000`, seed {args.get('split_seed')}), with about "
        f"{args.get('validation_size', 0):.0%} of the lesions in validation and {args.get('test_size', 0):.0%} in "
        f"test; {sizes}."
    )


def _data_description(args: dict[str, Any] | None) -> tuple[str, str | None]:
    """(text, Hub dataset id or `None`)."""
    dataset = (args or {}).get("dataset")
    text = (
        "HAM10000 (Tschandl et al. 2018): 10,015 dermatoscopic images of 7,470 pigmented lesions, 7 diagnoses, "
        "from the Medical University of Vienna and a skin-cancer practice in Queensland; more than half confirmed by "
        "histopathology."
    )
    if _is_hub_id(dataset):
        return (
            text + f" Loaded from the Hub dataset [`{dataset}`](https://huggingface.co/datasets/{dataset}).",
            dataset,
        )
    if dataset:
        return text + " Loaded from a local copy in the HAM10000 format.", None
    return text, None


def _training_results(run: RunFolder) -> str:
    state = run.trainer_state or {}
    if not state:
        return ""
    epochs = state.get("epoch")
    text = f"Trained for {epochs:g} epoch{'s' * (epochs != 1)}" if epochs is not None else "Trained"
    text += f" ({state.get('global_step')} optimizer steps)"
    if state.get("best_metric") is not None:
        text += f"; best validation {_best_metric_name(run)} {_fmt(state['best_metric'])}"
    return text + ". The loss and validation curves are in `trainer_state.json`."


def _best_metric_name(run: RunFolder) -> str:
    return (run.args or {}).get("metric_for_best_model") or "balanced_accuracy"


def model_card(run_dir: str | os.PathLike, *, repo_id: str | None = None) -> ModelCard:
    """The model card (README.md) of a finished `scripts/finetune.py` run, from `model_card_template.md`.

    Every number comes from the run's files: test metrics (`model-index` metadata, tables), `run_args.json`
    (hyperparameters, split seed, base model), `trainer_state.json` (epochs, best validation score).

    Args:
        run_dir (`str` or `os.PathLike`): the run's `--output_dir`.
        repo_id (`str`, *optional*): the Hub repo it is published as (name of the model, usage snippet).
    """
    run = read_run(run_dir)
    model_name = (repo_id or run.path.resolve().name).split("/")[-1]
    data_text, dataset_id = _data_description(run.args)
    base = _base_model(run.args)
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_id or "ham10000",
            dataset_name="HAM10000",
            dataset_split="test",
            metric_type=metric_type,
            metric_name=name,
            metric_value=run.test_metrics[key],
            metric_args=metric_args,
        )
        for key, metric_type, name, metric_args in MODEL_INDEX_METRICS
        if key in run.test_metrics and not math.isnan(run.test_metrics[key])
    ]
    card_data = ModelCardData(
        model_name=model_name,
        license="cc-by-nc-4.0",
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["hf-skin", "image-classification", "medical", "dermatology", "skin-lesion", "dermoscopy", "ham10000"],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base if _is_hub_id(base) else None,
        metrics=[metric_type for _, metric_type, _, _ in MODEL_INDEX_METRICS],
        eval_results=eval_results or None,
    )
    if run.args is None:
        origin = f"from a starting point that was not recorded (the run has no {RUN_ARGS_FILE})"
    elif base is None:
        origin = "trained from scratch (random initialisation)"
    elif _is_hub_id(base):
        origin = f"fine-tuned from [`{base}`](https://huggingface.co/{base})"
    else:
        origin = f"fine-tuned from a local checkpoint ({Path(base).name})"
    summary = (
        f"A skin-lesion classifier for dermoscopic images: {_family(run.config)}, {origin}, with "
        f"{_parameter_count(run.path):,} parameters. It sorts an image into HAM10000's seven diagnoses. Test "
        f"balanced accuracy {_fmt(run.test_metrics.get('balanced_accuracy', float('nan')))}, accuracy "
        f"{_fmt(run.test_metrics.get('accuracy', float('nan')))} (see [Evaluation](#evaluation)). Trained with "
        "hf-skin."
    )
    figures = [
        (name, caption)
        for name, caption in (
            ("test_confusion_matrix.png", "Confusion matrix on the test split (counts)"),
            ("test_confusion_matrix_normalized.png", "Confusion matrix on the test split, rows normalised (recall)"),
        )
        if (run.path / name).is_file()
    ]
    best = run.trainer_state.get("best_metric") if run.trainer_state else None
    best_metric_text = f"best validation {_best_metric_name(run)}" + (f" {_fmt(best)}" if best is not None else "")
    subset = (run.args or {}).get("max_eval_samples")
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        summary=summary,
        usage=_usage(repo_id or "path/to/this/folder", run.config),
        input_description=_input_description(run.path),
        labels_table=_labels_table(run.config, run.test_metrics),
        rare_classes=_rare_classes(run.test_metrics),
        dx_type_warning="dx_type" in run.config.get("metadata_fields", []),
        data_description=data_text,
        split_description=_split_description(run.args, run),
        hyperparameters_table=_hyperparameters_table(run.args),
        training_results=_training_results(run),
        test_size_text=f" (a subset of {subset} images)" if subset else "",
        best_metric_text=best_metric_text,
        metrics_table=_metrics_table(run.test_metrics, run.validation_metrics),
        per_class_table=_per_class_table(run.test_metrics),
        figures=figures,
        citation=HAM10000_CITATION,
    )


# ----------------------------------------------------------------------------------------------------------------
# Pushing a training run


def run_files(run_dir: str | os.PathLike) -> list[str]:
    """The files of a run folder that a push publishes (`hf_skin.runs.PUBLISHED_FILES`): weights, configs, processor,
    modeling code (for `trust_remote_code`), the run's record, metrics, figures and README.md; nothing else."""
    return RunFolder(run_dir).published_files()


def push_run_to_hub(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "hf-skin training run: model, processor, modeling code, metrics, model card",
) -> str:
    """Publishes a finished training run as a Hub model repo, in one commit.

    Writes the model card to `run_dir/README.md`, then commits `run_files(run_dir)` (weights, configs, processor,
    modeling code, metrics, confusion matrices, card). The repo then holds exactly this run: files of an earlier push
    that this run does not have are deleted in the same commit. `AutoModelForImageClassification.from_pretrained`,
    `pipeline()` and `SkinClassifier.from_pretrained` load it by its id; without hf-skin, with
    `trust_remote_code=True`.

    Args:
        run_dir (`str` or `os.PathLike`): the `--output_dir` of a finished `scripts/finetune.py` run.
        repo_id (`str`): `user/name` or `org/name` (created when missing); a bare `name` goes to the token's user.
        private (`bool`, *optional*): visibility of the repo if this call creates it (default: the Hub's).
        token (`str`, *optional*): defaults to `HF_TOKEN` or the `hf auth login` token; never logged or written.

    Returns:
        `str`: the URL of the model repo.
    """
    run = read_run(run_dir)  # a bad folder fails here, before anything is created on the Hub
    api = HfApi(token=hub_token(token))
    try:
        repo_url = api.create_repo(check_repo_id(repo_id), private=private, exist_ok=True)
        card = model_card(run.path, repo_id=repo_url.repo_id)
        card.save(run.path / "README.md")
        names = run_files(run.path)
        stale = set(api.list_repo_files(repo_url.repo_id)) - set(names) - {".gitattributes"}
        api.create_commit(
            repo_url.repo_id,
            operations=[CommitOperationDelete(path) for path in sorted(stale)]
            + [CommitOperationAdd(name, run.path / name) for name in names],
            commit_message=commit_message,
        )
    except (HfHubHTTPError, ConnectionError):
        logger.error(
            "The push failed; %s is intact: push it again with scripts/push_to_hub.py %s %s",
            run.path,
            run.path,
            repo_id,
        )
        raise
    logger.info("Pushed %s (%d files) to %s", run.path, len(names), repo_url)
    return str(repo_url)


def trainer_push_settings(training_args) -> dict | None:
    """For `hf_skin.training.run`: takes `--push_to_hub` away from the Trainer and returns `push_run_to_hub`'s
    arguments (or `None` without `--push_to_hub`).

    The Trainer would push its own card and every checkpoint at each save; a run is published once, at the end, by
    `push_run_to_hub`. The repo id and the token are checked now, not after hours of training, and `--hub_token` is
    cleared so that it does not end up in the pickled `training_args.bin`.
    """
    if not training_args.push_to_hub:
        training_args.hub_token = None
        return None
    repo_id = check_repo_id(training_args.hub_model_id or Path(training_args.output_dir).absolute().name)
    token = hub_token(training_args.hub_token)
    training_args.push_to_hub, training_args.hub_token = False, None
    return {"repo_id": repo_id, "private": training_args.hub_private_repo, "token": token}
