"""The dataset card (README.md) of a prepared HAM10000 `DatasetDict`: what the data is, its features, classes and
splits (every number computed from the data), the data-analysis plots, license, limitations and citations."""

from __future__ import annotations

from datasets import ClassLabel, DatasetDict, Image, Value
from huggingface_hub import DatasetCard, DatasetCardData

from .data import class_counts, shared_lesions
from .labels import DX_NAMES, HAM10000_CITATION, MALIGNANT_DX

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


def _class_table(dataset_dict: DatasetDict) -> str:
    splits = list(dataset_dict)
    counts = {split: class_counts(ds) for split, ds in dataset_dict.items()}
    names = list(dict.fromkeys(dx for split in splits for dx in counts[split]))  # DX_LABELS' order, then any other
    lines = [
        "| dx | diagnosis | malignant | " + " | ".join(splits) + " | total |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in splits) + " | ---: |",
    ]
    for dx in names:
        row = [counts[split].get(dx, 0) for split in splits]
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
    shared = len(shared_lesions(dataset_dict)) if has_lesions else None
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
