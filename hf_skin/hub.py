"""The Hugging Face Hub side of hf-skin: dataset card, dataset preparation and push (the model side comes next)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Image, Value
from datasets.table import embed_table_storage
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from .data import DX_NAMES, MALIGNANT_DX
from .metrics import HAM10000_CITATION

logger = logging.getLogger(__name__)

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
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
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
    dataset_dict.push_to_hub(repo_id, private=private, token=token, commit_message="HAM10000 splits (parquet)")
    url = f"https://huggingface.co/datasets/{repo_id}"
    logger.info("Pushed the dataset to %s", url)
    return url


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
