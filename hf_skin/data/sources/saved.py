"""HAM10000 already saved as a dataset: a `save_to_disk` folder, parquet file(s) or a Hub dataset repo, loaded with
`datasets` and brought to the canonical features (labels mapped by name, ages checked, images checked)."""

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict

from ...labels import LABEL_VOCABULARIES, METADATA_COLUMNS, is_valid_age
from ...locations import HubUnavailableError, hub_reachable
from ..checks import check_dataset_images, check_ids_present, encode_labels, is_missing, parse_ages
from ..schema import column_values, ham10000_features

logger = logging.getLogger(__name__)

# What `save_to_disk` writes (a DatasetDict's first, a Dataset's the others).
SAVED_DATASET_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation"}
_SPLIT_ALIASES.update({"dev": "validation", "test": "test"})


def load_dataset_source(kind: str, location: Path | str, cache_dir) -> Dataset | DatasetDict:
    """The source as `datasets` loads it: `kind` "disk" (`load_from_disk`), "parquet" (a file or a folder) or "hub"
    (a dataset id; offline, from `datasets`' cache, when the Hub does not answer)."""
    cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    if kind == "disk":
        return datasets.load_from_disk(os.fspath(location))
    if kind == "parquet":
        if Path(location).is_file():
            return datasets.load_dataset("parquet", data_files=os.fspath(location), cache_dir=cache_dir)
        return datasets.load_dataset("parquet", data_dir=os.fspath(location), cache_dir=cache_dir)
    # Unreachable, huggingface_hub retries for ~25 s: ask once, quickly, and if it does not answer load in datasets'
    # offline mode, which reads the copy in its cache.
    offline = datasets.config.HF_HUB_OFFLINE or not hub_reachable()
    try:
        with _datasets_offline(offline):
            return datasets.load_dataset(location, cache_dir=cache_dir)
    except Exception as err:
        import httpx  # huggingface_hub's HTTP client: no network surfaces as its TransportError

        not_cached = offline and isinstance(err, FileNotFoundError)
        if not (not_cached or isinstance(err, (ConnectionError, TimeoutError, httpx.TransportError))):
            raise
        reason = f"{type(err).__name__}: {err}" + (", HF_HUB_OFFLINE=1" if datasets.config.HF_HUB_OFFLINE else "")
        raise HubUnavailableError(
            f"cannot load the Hub dataset {location!r}: no network/Hub access ({reason}). Point at a local copy "
            "instead: a HAM10000 download folder holding HAM10000_metadata.csv (e.g. `--dataset /path/to/HAM10000`), "
            "a save_to_disk or parquet folder, or a synthetic set made with `python -m hf_skin.synthetic OUT` "
            f"(then `--dataset OUT`). If {location!r} was meant as a local folder: it does not exist."
        ) from err


@contextlib.contextmanager
def _datasets_offline(offline: bool) -> Iterator[None]:
    """`datasets`' offline switch (`datasets.config.HF_HUB_OFFLINE`, read at each call) set to `offline` for the
    block, and put back as it was after it, whatever happens in it."""
    previous = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = previous


def normalize_given_splits(
    loaded: Dataset | DatasetDict, source: str, with_masks: bool, on_missing: str = "error"
) -> tuple[dict[str, Dataset], int]:
    """The source's splits under canonical names, each cast to the canonical features; and how many rows were
    dropped for an unreadable image (`on_missing="skip"`)."""
    if isinstance(loaded, Dataset):
        dataset, skipped = to_canonical(loaded, source, with_masks, on_missing)
        return {"all": dataset}, skipped
    given: dict[str, Dataset] = {}
    skipped = 0
    for name, split in loaded.items():
        canonical_name = _SPLIT_ALIASES.get(name, name)
        if canonical_name in given:
            raise ValueError(f"{source} has two splits that both mean {canonical_name!r}: {list(loaded)}")
        given[canonical_name], dropped = to_canonical(split, f"{source} split {name!r}", with_masks, on_missing)
        skipped += dropped
    return given, skipped


def to_canonical(dataset: Dataset, source: str, with_masks: bool, on_missing: str = "error") -> tuple[Dataset, int]:
    """Cast a HAM10000-shaped dataset to `ham10000_features`, mapping labels to canonical ids by name, and check its
    images (`check_dataset_images`); returns it and how many rows were dropped for an unreadable image."""
    required = ["image", *METADATA_COLUMNS]
    missing = [column for column in required if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{source} lacks required column(s) {', '.join(missing)}; found: {', '.join(dataset.column_names)}. "
            f"A HAM10000 dataset needs {', '.join(required)}"
        )
    with_mask = with_masks and "mask" in dataset.column_names
    features = ham10000_features(with_mask=with_mask)
    extra = [column for column in dataset.column_names if column not in features]
    if extra:
        logger.info("%s: dropping column(s) not used by hf_skin: %s", source, ", ".join(extra))
        dataset = dataset.remove_columns(extra)

    image_ids = column_values(dataset, "image_id")

    def where(row: int) -> str:
        return f"row {row}" + ("" if is_missing(image_ids[row]) else f" (image_id {image_ids[row]})")

    new_columns: dict[str, list] = {}
    for column in LABEL_VOCABULARIES:
        feature = dataset.features[column]
        values = column_values(dataset, column)
        if feature == features[column] and all(value is not None and value >= 0 for value in values):
            continue  # already canonical ids
        if isinstance(feature, ClassLabel):
            values = [None if value is None or value < 0 else feature.int2str(value) for value in values]
        new_columns[column] = encode_labels(column, values, where, source)
    ages = column_values(dataset, "age")
    # NaN (pandas' missing) -> None; an age outside 0-120 (inf included) is an error. NaN fails both comparisons.
    if dataset.features["age"] != features["age"] or any(age is not None and not is_valid_age(age) for age in ages):
        new_columns["age"] = parse_ages(ages, where, source)
    for column in ("image_id", "lesion_id"):
        check_ids_present(column, column_values(dataset, column), where, source)
    if new_columns:
        dataset = dataset.remove_columns(list(new_columns))
        for column, values in new_columns.items():
            dataset = dataset.add_column(column, values, feature=features[column])
    for column, feature in features.items():
        if dataset.features[column] != feature:
            dataset = dataset.cast_column(column, feature)
    dataset = dataset.select_columns(list(features))
    return check_dataset_images(dataset, source, where, on_missing)
