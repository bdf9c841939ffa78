"""HAM10000 as a `datasets.DatasetDict` (raw download folder, ISIC 2018 layout, Hub repo, parquet, saved folder),
lesion-grouped."""

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import datasets
import PIL.Image
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value, concatenate_datasets
from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from .labels import (  # noqa: F401  (re-exported: hf_skin.data's public vocabulary)
    DX_LABELS,
    DX_NAMES,
    DX_TYPE_LABELS,
    LABEL_VOCABULARIES,
    LOCALIZATION_LABELS,
    MALIGNANT_DX,
    MAX_AGE,
    METADATA_COLUMNS,
    MIN_AGE,
    SEX_LABELS,
    is_valid_age,
)
from .locations import HubUnavailableError, cache_root, hub_reachable, is_hub_id

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "marmal88/skin_cancer"
METADATA_FILENAME = "HAM10000_metadata.csv"
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
MASK_SUFFIX = "_segmentation.png"
# The ISIC 2018 Task 3 download of HAM10000 (its training set): no age, sex or localization.
ISIC_IMAGE_FOLDER = "ISIC2018_Task3_Training_Input"
ISIC_GROUND_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
ISIC_DX_COLUMNS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
# diagnosis_confirm_type -> dx_type: the ISIC files spell out what HAM10000_metadata.csv abbreviates.
ISIC_DX_TYPES = {
    "histopathology": "histo",
    "serial imaging showing no change": "follow_up",
    "single image expert consensus": "consensus",
    "confocal microscopy with consensus dermoscopy": "confocal",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "validation", "test")

_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation"}
_SPLIT_ALIASES.update({"dev": "validation", "test": "test"})
_SAVED_DATASET_FILES = ("dataset_dict.json", "dataset_info.json", "state.json")
# Bump when the cached build changes (features, checks, layout): old cache entries are then ignored.
_CACHE_VERSION = 3
_BUILD_REPORT = "hf_skin_build.json"
# The cache key reads this much of each file's head and of its tail (the whole file when it is smaller): a file
# replaced by another of the same size with its mtime preserved is still noticed (a PNG's tail holds the checksum
# of all its pixels, a JPEG's the end of its entropy-coded data).
_KEY_BYTES = 4096
# Cache eviction after each build: the most recently used builds of one source folder, and of all sources together
# a total size; the build just made is always kept. A staging folder or incomplete entry a day old is a dead build.
_CACHE_KEEP_PER_SOURCE = 3
_CACHE_MAX_BYTES = 20 * 2**30
_STALE_SECONDS = 86400
# A complete JPEG ends with the EOI marker FFD9 and a PNG with its IEND chunk; truncated downloads lack them.
# The marker may be followed by a little padding, so look at the tail rather than at the last two bytes only.
_TAIL_BYTES = 1024
_BATCH_BYTES = 8 * 2**20


def ham10000_features(with_mask: bool = False) -> Features:
    """The canonical `datasets.Features` of HAM10000, whatever the source.

    Args:
        with_mask (`bool`, *optional*, defaults to `False`):
            Add a `mask` image column (the published binary lesion segmentation).

    Returns:
        `Features`: `image`, `image_id`, `lesion_id`, `dx`, `dx_type`, `age`, `sex`, `localization` (and `mask`).
        Label ids follow `DX_LABELS`, `DX_TYPE_LABELS`, `SEX_LABELS` and `LOCALIZATION_LABELS`; a missing age is
        `None`, never 0.
    """
    features = {
        "image": Image(),
        "image_id": Value("string"),
        "lesion_id": Value("string"),
        "dx": ClassLabel(names=DX_LABELS),
        "dx_type": ClassLabel(names=DX_TYPE_LABELS),
        "age": Value("float32"),
        "sex": ClassLabel(names=SEX_LABELS),
        "localization": ClassLabel(names=LOCALIZATION_LABELS),
    }
    if with_mask:
        features["mask"] = Image()
    return Features(features)


def load_ham10000(
    source: str | os.PathLike = DEFAULT_DATASET,
    *,
    test_size: float = 0.15,
    validation_size: float = 0.15,
    seed: int = 42,
    resplit: bool = True,
    on_missing: str = "error",
    with_masks: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> DatasetDict:
    """Load HAM10000 as a `DatasetDict` with `train`, `validation` and `test` splits and canonical features.

    The kind of source is decided by what the path holds:

    - a folder with `HAM10000_metadata.csv` (the public download's raw layout: `<image_id>.jpg` anywhere below it,
      masks in `HAM10000_segmentations_lesion_tschandl/`). It is built once into an Arrow cache keyed by the CSV's
      content and, for every image and mask file, its name, size, modification time and first and last 4 KiB; later
      loads of the unchanged folder are memory-mapped from that cache without decoding any image. The cache keeps the
      3 most recently used builds of a folder and 20 GiB in all. Images are stored as their file's bytes (not
      decoded). Symbolic links are followed, each folder scanned once (a link loop is logged and not followed). An
      image id found in several folders (e.g. `full_resolution_sample/` beside the part folders) is taken from the
      folder holding most images; image files without a metadata row are ignored (logged).
    - a folder in the ISIC 2018 Task 3 training download's layout: `ISIC2018_Task3_Training_GroundTruth.csv` (one-hot
      `MEL,NV,BCC,AKIEC,BKL,DF,VASC` -> `dx`; a row that is not one-hot is an error naming its line) and
      `ISIC2018_Task3_Training_LesionGroupings.csv` (`lesion_id`; `diagnosis_confirm_type` -> `dx_type`, an unknown
      one `unknown`, logged), each in the folder or one folder down, images anywhere below it (e.g.
      `ISIC2018_Task3_Training_Input/`). Built and cached like the raw folder. These files have no age, sex or
      localization: age is `None` and sex and localization `unknown` on every row (a WARNING says so). Without the
      groupings file it refuses: a split without lesion ids would leak views of one lesion across splits.
    - a `save_to_disk` folder (`Dataset` or `DatasetDict`), a parquet file or a folder of parquet files;
    - otherwise a Hub dataset id such as `marmal88/skin_cancer`.

    Labels given as strings, or as a `ClassLabel` in another order, are mapped by name to the canonical ids. An age
    must be a number of years from 0 to 120; an empty, `nan`, `NA`, `none` or `null` age is missing (`None`). Images
    (and masks) are checked when loaded, raw folders when built: not null, a readable file, a header PIL opens, and
    for JPEG/PNG the end marker, so that training does not meet an undecodable one mid-epoch (see `on_missing`).
    This decodes no JPEG/PNG: one corrupt in the middle, with intact header and end, is not found.

    Args:
        source (`str` or `os.PathLike`, *optional*, defaults to `DEFAULT_DATASET`):
            Local folder or file, or Hub dataset id.
        test_size (`float`, *optional*, defaults to 0.15):
            Fraction of *lesions* (not images) in the test split.
        validation_size (`float`, *optional*, defaults to 0.15):
            Fraction of lesions in the validation split.
        seed (`int`, *optional*, defaults to 42):
            Seed of the lesion-grouped split.
        resplit (`bool`, *optional*, defaults to `True`):
            For sources that come with splits: pool them and split again by lesion (a WARNING is logged when the
            given splits share lesions). `False` keeps the given splits (and still warns about shared lesions).
        on_missing (`str`, *optional*, defaults to `"error"`):
            What to do with rows whose image is missing, null *or unreadable* (truncated/corrupt), in any source:
            `"error"` (naming the rows) or `"skip"` (drop the rows, logged as a WARNING and counted in the summary
            line). An unreadable mask becomes `None` with `"skip"`.
        with_masks (`bool`, *optional*, defaults to `True`):
            Add a `mask` column when the source has masks.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Where raw folders are built, defaulting to `$HF_SKIN_CACHE`, else `~/.cache/hf_skin`; also passed to
            `datasets.load_dataset` for Hub and parquet sources (whose default is `datasets`' own cache).

    Returns:
        `DatasetDict`: splits `train`, `validation` and `test`; no lesion appears in two of them.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', not {on_missing!r}")
    _check_split_sizes(test_size, validation_size)
    kind, location = _resolve_source(source)
    if kind in ("raw", "isic"):
        raw_source = _ham10000_source(location) if kind == "raw" else _isic_source(location)
        dataset, summary = _load_raw_folder(
            raw_source, on_missing=on_missing, with_masks=with_masks, cache_dir=cache_dir
        )
        given = {"all": dataset}
    else:
        loaded = _load_dataset_source(kind, location, cache_dir)
        given, skipped = _normalize_given_splits(loaded, str(location), with_masks, on_missing)
        rows = sum(map(len, given.values()))
        summary = (
            f"{rows + skipped} rows read from {len(given)} given split(s) ({', '.join(given)}), {rows} kept, "
            f"skipped {skipped} with unreadable image"
        )

    if len(given) == 1:
        (dataset,) = given.values()
        splits = lesion_grouped_split(dataset, test_size=test_size, validation_size=validation_size, seed=seed)
    else:
        _check_unique_image_ids(given, str(location))
        leaks = _leaking_lesions(given)
        if leaks:
            logger.warning(
                "the given splits of %s share %d lesion(s) (e.g. %s): images of one lesion in two splits leak; %s",
                location,
                len(leaks),
                ", ".join(sorted(leaks)[:3]),
                "splitting again by lesion (resplit=True)" if resplit else "keeping them because resplit=False",
            )
        if resplit:
            logger.info("%s: pooling the given splits (%s) and splitting by lesion", location, ", ".join(given))
            pooled = concatenate_datasets(list(given.values()))
            splits = lesion_grouped_split(pooled, test_size=test_size, validation_size=validation_size, seed=seed)
        else:
            absent = [name for name in SPLITS if name not in given]
            if absent:
                raise ValueError(
                    f"{location} has splits {list(given)} but no {', '.join(map(repr, absent))}: resplit=False keeps "
                    "the given splits, so it needs train, validation and test; pass resplit=True to split by lesion"
                )
            ignored = [name for name in given if name not in SPLITS]
            if ignored:
                logger.warning(
                    "%s: resplit=False keeps train/validation/test and ignores split(s) %s", location, ignored
                )
            splits = DatasetDict({name: given[name] for name in SPLITS})

    sizes = ", ".join(
        f"{name} {len(split)} images/{len(set(column_values(split, 'lesion_id')))} lesions"
        for name, split in splits.items()
    )
    logger.info("HAM10000 from %s: %s; splits: %s", location, summary, sizes)
    return splits


def lesion_grouped_split(
    dataset: Dataset, test_size: float = 0.15, validation_size: float = 0.15, seed: int = 42
) -> DatasetDict:
    """Split by lesion, stratified by diagnosis: all images of a lesion land in the same split.

    Lesions (not images) are split: first `test_size` of them to `test`, then `validation_size` (of all lesions) of
    the rest to `validation`, with scikit-learn's `train_test_split` stratified by the lesion's `dx`. When a class has
    too few lesions to stratify (tiny datasets), that step falls back to an unstratified split with a WARNING.

    Args:
        dataset (`Dataset`):
            Has `lesion_id` and `dx` columns; all images of a lesion must share one `dx`.
        test_size (`float`, *optional*, defaults to 0.15):
            Fraction of lesions in `test`, in (0, 1).
        validation_size (`float`, *optional*, defaults to 0.15):
            Fraction of lesions in `validation`, in (0, 1); `test_size + validation_size < 1`.
        seed (`int`, *optional*, defaults to 42):
            The same seed gives the same split.

    Returns:
        `DatasetDict`: `train`, `validation`, `test` (row selections of `dataset`, in its order).
    """
    _check_split_sizes(test_size, validation_size)
    lesion_ids = column_values(dataset, "lesion_id")
    dx = column_values(dataset, "dx")
    dx_feature = dataset.features["dx"]
    if isinstance(dx_feature, ClassLabel):
        dx = [dx_feature.int2str(label) for label in dx]

    lesion_dx: dict[str, str] = {}
    conflicts: dict[str, set[str]] = {}
    for lesion, label in zip(lesion_ids, dx):
        first = lesion_dx.setdefault(lesion, label)
        if first != label:
            conflicts.setdefault(lesion, {first}).add(label)
    if conflicts:
        examples = "; ".join(
            f"{lesion}: {', '.join(sorted(labels))}" for lesion, labels in sorted(conflicts.items())[:3]
        )
        raise ValueError(
            f"{len(conflicts)} lesion(s) have images with different dx ({examples}): every image of a lesion must "
            "carry the lesion's diagnosis; fix lesion_id or dx in the metadata"
        )

    lesions = sorted(lesion_dx)  # sorted: the split depends on the seed only, not on the row order
    rest, test = _split_lesions(lesions, lesion_dx, test_size, seed, "test")
    train, validation = _split_lesions(rest, lesion_dx, validation_size / (1 - test_size), seed, "validation")
    split_of = {lesion: name for name, part in zip(SPLITS, (train, validation, test)) for lesion in part}
    indices: dict[str, list[int]] = {name: [] for name in SPLITS}
    for row, lesion in enumerate(lesion_ids):
        indices[split_of[lesion]].append(row)
    # keep_in_memory: the index mappings are tiny; writing them beside a (read-only, shared) cache is not wanted.
    return DatasetDict({name: dataset.select(indices[name], keep_in_memory=True) for name in SPLITS})


def class_counts(dataset: Dataset) -> dict[str, int]:
    """Images per diagnosis, in `DX_LABELS` order (zeros included), for cards and logs."""
    dx = column_values(dataset, "dx")
    dx_feature = dataset.features["dx"]
    if isinstance(dx_feature, ClassLabel):
        dx = [dx_feature.int2str(label) for label in dx]
    counts = Counter(dx)
    return {label: counts.pop(label, 0) for label in DX_LABELS} | dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------------------------------
# Sources


def _resolve_source(source: str | os.PathLike) -> tuple[str, Path | str]:
    """("raw" | "isic" | "disk" | "parquet", path) for local sources, ("hub", id) otherwise."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.name == METADATA_FILENAME:
            return "raw", path.parent
        if path.suffix == ".parquet":
            return "parquet", path
        raise ValueError(
            f"{path} is a file, but neither a parquet file nor {METADATA_FILENAME}: pass the HAM10000 download "
            f"folder (or the ISIC 2018 one, holding {ISIC_IMAGE_FOLDER}/), a save_to_disk folder, a parquet "
            "file/folder or a Hub dataset id"
        )
    if path.is_dir():
        if (path / METADATA_FILENAME).is_file():
            return "raw", path
        if _find_isic_file(path, ISIC_GROUND_TRUTH) is not None:
            return "isic", path
        if any((path / name).is_file() for name in _SAVED_DATASET_FILES):
            return "disk", path
        if next(path.rglob("*.parquet"), None) is not None:
            return "parquet", path
        entries = sorted(entry.name for entry in os.scandir(path) if not entry.name.startswith("."))
        if not entries:
            raise FileNotFoundError(
                f"{path} is empty: download HAM10000 into it (HAM10000_metadata.csv and the image folders) or make "
                "a synthetic set with `python -m hf_skin.synthetic OUT`"
            )
        nested = sorted(path.glob(f"*/{METADATA_FILENAME}"))
        hint = f"; did you mean {nested[0].parent}?" if nested else ""
        raise FileNotFoundError(
            f"{path} has no {METADATA_FILENAME} (a HAM10000 download folder), no {ISIC_GROUND_TRUTH} (an ISIC 2018 "
            f"Task 3 download), no {'/'.join(_SAVED_DATASET_FILES)} "
            f"(a save_to_disk folder) and no *.parquet files; it holds {', '.join(entries[:5])}"
            f"{', ...' if len(entries) > 5 else ''}{hint}"
        )
    name = os.fspath(source)
    if is_hub_id(name):
        return "hub", name
    raise FileNotFoundError(
        f"no such folder: {path} (and {name!r} is not a Hub dataset id 'user/name'): pass the folder of a HAM10000 "
        "download (the one holding HAM10000_metadata.csv)"
    )


def _load_dataset_source(kind: str, location: Path | str, cache_dir) -> Dataset | DatasetDict:
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
        with mock.patch.object(datasets.config, "HF_HUB_OFFLINE", offline):
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


def _normalize_given_splits(
    loaded: Dataset | DatasetDict, source: str, with_masks: bool, on_missing: str = "error"
) -> tuple[dict[str, Dataset], int]:
    """The source's splits under canonical names, each cast to the canonical features; and how many rows were
    dropped for an unreadable image (`on_missing="skip"`)."""
    if isinstance(loaded, Dataset):
        dataset, skipped = _to_canonical(loaded, source, with_masks, on_missing)
        return {"all": dataset}, skipped
    given: dict[str, Dataset] = {}
    skipped = 0
    for name, split in loaded.items():
        canonical_name = _SPLIT_ALIASES.get(name, name)
        if canonical_name in given:
            raise ValueError(f"{source} has two splits that both mean {canonical_name!r}: {list(loaded)}")
        given[canonical_name], dropped = _to_canonical(split, f"{source} split {name!r}", with_masks, on_missing)
        skipped += dropped
    return given, skipped


def _to_canonical(dataset: Dataset, source: str, with_masks: bool, on_missing: str = "error") -> tuple[Dataset, int]:
    """Cast a HAM10000-shaped dataset to `ham10000_features`, mapping labels to canonical ids by name, and check its
    images (`_check_dataset_images`); returns it and how many rows were dropped for an unreadable image."""
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
        return f"row {row}" + ("" if _is_missing(image_ids[row]) else f" (image_id {image_ids[row]})")

    new_columns: dict[str, list] = {}
    for column in LABEL_VOCABULARIES:
        feature = dataset.features[column]
        values = column_values(dataset, column)
        if feature == features[column] and all(value is not None and value >= 0 for value in values):
            continue  # already canonical ids
        if isinstance(feature, ClassLabel):
            values = [None if value is None or value < 0 else feature.int2str(value) for value in values]
        new_columns[column] = _encode_labels(column, values, where, source)
    ages = column_values(dataset, "age")
    # NaN (pandas' missing) -> None; an age outside 0-120 (inf included) is an error. NaN fails both comparisons.
    if dataset.features["age"] != features["age"] or any(age is not None and not is_valid_age(age) for age in ages):
        new_columns["age"] = _parse_ages(ages, where, source)
    for column in ("image_id", "lesion_id"):
        _check_ids_present(column, column_values(dataset, column), where, source)
    if new_columns:
        dataset = dataset.remove_columns(list(new_columns))
        for column, values in new_columns.items():
            dataset = dataset.add_column(column, values, feature=features[column])
    for column, feature in features.items():
        if dataset.features[column] != feature:
            dataset = dataset.cast_column(column, feature)
    dataset = dataset.select_columns(list(features))
    return _check_dataset_images(dataset, source, where, on_missing)


def verify_images(dataset: Dataset, source: str, on_missing: str = "error") -> Dataset:
    """Decodes every image of `dataset` in full and, like the load-time check, names the rows that fail
    (`on_missing="error"`) or drops them (`"skip"`, logged).

    The load-time check reads headers and end markers only; an image damaged in its middle passes it and would
    crash training mid-epoch. Training calls this once before its first step (about 8 s for HAM10000's 8,584 small
    JPEGs on 2 cores)."""
    dataset = dataset.cast_column("image", Image(decode=False)) if "image" in dataset.column_names else dataset
    image_ids = column_values(dataset, "image_id") if "image_id" in dataset.column_names else None

    def where(row: int) -> str:
        return f"row {row}" + ("" if image_ids is None else f" (image_id {image_ids[row]})")

    return _check_dataset_images(dataset, source, where, on_missing, full_decode=True, columns=("image",))[0]


def _check_dataset_images(
    dataset: Dataset,
    source: str,
    where: Callable[[int], str],
    on_missing: str,
    full_decode: bool = False,
    columns: tuple[str, ...] = ("image", "mask"),
) -> tuple[Dataset, int]:
    """Find, at load time, the images (and masks) that would fail to decode mid-epoch: null, empty, an unreadable
    file, bytes PIL cannot open, a JPEG/PNG without its end marker. `on_missing="error"` names them; `"skip"` drops
    their rows (an unreadable mask becomes None). Cost: a header parse per image, no decoding (JPEG and PNG)."""
    bad_images = _bad_image_rows(dataset, "image", null_ok=False, full_decode=full_decode)
    has_masks = "mask" in columns and "mask" in dataset.column_names
    bad_masks = _bad_image_rows(dataset, "mask", null_ok=True, full_decode=full_decode) if has_masks else []
    for column, bad, remedy in (
        ("image", bad_images, "pass on_missing='skip' to drop their rows"),
        ("mask", bad_masks, "pass on_missing='skip' to set them to None, or with_masks=False"),
    ):
        if bad and on_missing == "error":
            row, reason = bad[0]
            raise ValueError(
                f"{source}, {where(row)}: {column} {reason} ({len(bad)} such row(s)). Replace these {column}s, or "
                f"{remedy}"
            )
    if bad_masks:
        logger.warning("%s: %d unreadable mask(s) set to None", source, len(bad_masks))
        masks = dataset.select_columns(["mask"]).cast_column("mask", Image(decode=False))["mask"][:]
        for row, _ in bad_masks:
            masks[row] = None
        dataset = dataset.remove_columns("mask").add_column("mask", masks, feature=Image())
    if not bad_images:
        return dataset, 0
    image_ids = column_values(dataset, "image_id")
    skipped = [image_ids[row] for row, _ in bad_images]
    logger.warning(
        "%s: skipping %d row(s) whose image is null or unreadable (%s%s)",
        source,
        len(skipped),
        ", ".join(skipped[:3]),
        ", ..." if len(skipped) > 3 else "",
    )
    drop = {row for row, _ in bad_images}
    if len(drop) == len(dataset):
        raise ValueError(f"{source}: no row has a readable image: nothing to load")
    # keep_in_memory: the index mapping is tiny, and the source folder (a save_to_disk copy) is not ours to write.
    return dataset.select([row for row in range(len(dataset)) if row not in drop], keep_in_memory=True), len(drop)


def _bad_image_rows(dataset: Dataset, column: str, null_ok: bool, full_decode: bool = False) -> list[tuple[int, str]]:
    """(row, what is wrong) for each value of an `Image` column that would not decode."""
    bad = []
    values = dataset.select_columns([column]).with_format("arrow")  # {"bytes", "path"} structs, never decoded
    row = 0
    for batch in values.iter(batch_size=256):
        for value in batch.column(column).to_pylist():
            reason = _image_problem(value, null_ok, full_decode)
            if reason is not None:
                bad.append((row, reason))
            row += 1
    return bad


def _image_problem(value: dict | None, null_ok: bool = False, full_decode: bool = False) -> str | None:
    """Why an `Image` feature's stored value would not decode ("is null", "file ... cannot be read", ...), or None
    when it looks fine (header and end only)."""
    data = None if value is None else value.get("bytes")
    path = None if value is None else value.get("path")
    if data is None and path is None:
        return None if null_ok else "is null (neither bytes nor a path)"
    what = ""
    if data is None:
        if "://" in path:
            return None  # a remote file (streaming): datasets fetches it when read, nothing to check offline
        what = f"file {path} "
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            return f"{what}cannot be read ({err.strerror or err})"
    if not data:
        return f"{what}is empty (0 bytes)"
    if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
        if not _is_complete_image(data):
            return f"{what}is a truncated JPEG/PNG (no end marker)"
    problem = _decode_problem(data, full_decode)
    return None if problem is None else what + problem


def _decode_problem(data: bytes, full_decode: bool = False) -> str | None:
    """Why PIL cannot open these bytes ("cannot be decoded (...)"), or None. JPEG/PNG: the header only (their end
    marker is checked apart); other formats, with no end marker to look for, are decoded in full (rare here)."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            if full_decode or image.format not in ("JPEG", "PNG"):
                image.load()
    except Exception as err:  # any failure here would be a failure mid-epoch later, and PIL raises many kinds
        # UnidentifiedImageError's message only names the BytesIO object.
        detail = "not an image format PIL knows" if isinstance(err, PIL.UnidentifiedImageError) else err
        return f"cannot be decoded ({type(err).__name__}: {detail})"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Raw download folder


@dataclass(frozen=True)
class _RawSource:
    """A download folder of image files and metadata CSV files: the files, and how their rows are read."""

    kind: str  # "ham10000" (HAM10000_metadata.csv) or "isic2018": part of the cache key
    root: Path  # images are searched anywhere below it
    files: tuple[Path, ...]  # the metadata CSVs: their whole content keys the cache; files[0] lists the images
    read: Callable[[list[bytes]], list[dict]]  # their contents -> rows with canonical label ids and age
    note: str = ""  # appended to the summary line


def _ham10000_source(root: Path) -> _RawSource:
    csv_path = root / METADATA_FILENAME
    return _RawSource("ham10000", root, (csv_path,), lambda contents: _read_metadata(csv_path, contents[0]))


def _load_raw_folder(source: _RawSource, *, on_missing: str, with_masks: bool, cache_dir) -> tuple[Dataset, str]:
    """The raw folder as one `Dataset` (all rows) and a summary line, from the fingerprint-keyed cache or built."""
    root = source.root
    contents = [path.read_bytes() for path in source.files]
    images, duplicates = _scan_images(root)
    mask_dir = root / MASK_FOLDER
    use_masks = with_masks and mask_dir.is_dir()
    masks = _scan_masks(mask_dir) if use_masks else {}

    # The key: the whole CSV(s), and each file's name, size, mtime and head and tail bytes (see _KEY_BYTES).
    digest = hashlib.sha256(f"hf_skin {source.kind} v{_CACHE_VERSION} {use_masks} {on_missing}\n".encode())
    digest.update(contents[0])
    for content in contents[1:]:  # delimited by their length, so that no byte can move from one file to the next
        digest.update(f"\n\0{len(content)}\0".encode() + content)
    files = [file for image_id in sorted(images) for file in images[image_id]]
    files += [(MASK_FOLDER + os.sep + masks[image_id][0], *masks[image_id][1:]) for image_id in sorted(masks)]
    for relpath, size, mtime_ns in files:
        digest.update(f"{relpath}\0{size}\0{mtime_ns}\n".encode())
        _hash_head_and_tail(digest, root / relpath, size)
    fingerprint = digest.hexdigest()[:24]
    cache = cache_root(cache_dir)
    cached = cache / f"ham10000-{fingerprint}"

    if (cached / _BUILD_REPORT).is_file():
        try:
            report = json.loads((cached / _BUILD_REPORT).read_text())
            dataset = _open_cached(cached, report)
        except Exception as err:  # a cache entry damaged by hand: build it again rather than fail
            logger.warning("cache entry %s is damaged (%s: %s); rebuilding it", cached, type(err).__name__, err)
            shutil.rmtree(cached, ignore_errors=True)
        else:
            logger.info("%s: loaded from cache %s", root, cached)
            with contextlib.suppress(OSError):  # its last use, for eviction; a read-only cache just is not updated
                os.utime(cached / _BUILD_REPORT)
            return dataset, report["summary"]

    dataset, report = _build_raw_dataset(
        source, contents, images, duplicates, masks if use_masks else None, on_missing, cache, cached
    )
    logger.info("%s: built %s", root, cached)
    _evict_cache(cache, cached)
    return dataset, report["summary"]


def _hash_head_and_tail(digest, path: Path, size: int) -> None:
    """Feed the first and last `_KEY_BYTES` of a file (all of it when smaller) to `digest`."""
    with open(path, "rb") as f:
        if size <= 2 * _KEY_BYTES:
            digest.update(f.read())
            return
        digest.update(f.read(_KEY_BYTES))
        f.seek(-_KEY_BYTES, os.SEEK_END)
        digest.update(f.read())


def _evict_cache(cache_root: Path, current: Path) -> None:
    """Remove cache entries beyond the `_CACHE_KEEP_PER_SOURCE` most recently used of each source folder and, oldest
    first, beyond `_CACHE_MAX_BYTES` in all; `current` (the entry just built) always stays. Also removes staging
    folders and incomplete entries left by builds that died over `_STALE_SECONDS` ago. Last use is the mtime of
    the entry's build report (touched on every cache hit)."""
    now = time.time()
    entries = []  # (last used, size, source, path)
    for path in cache_root.iterdir():
        try:
            if path.name.startswith(".build-") or (
                path.name.startswith("ham10000-") and not (path / _BUILD_REPORT).is_file()
            ):
                if path != current and now - path.stat().st_mtime > _STALE_SECONDS:
                    logger.info("removing %s, left by a build that did not finish", path)
                    shutil.rmtree(path, ignore_errors=True)
                continue
            if not path.name.startswith("ham10000-"):
                continue  # not ours (e.g. pretrained/)
            report = path / _BUILD_REPORT
            source = json.loads(report.read_text()).get("source", "")
            size = sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
            entries.append((report.stat().st_mtime, size, os.path.realpath(source), path))
        except (OSError, ValueError):  # removed by another process meanwhile, or a damaged report: leave it
            continue
    entries.sort(key=lambda entry: entry[0], reverse=True)  # most recently used first
    per_source: Counter = Counter()
    total = 0
    for _, size, source, path in entries:
        per_source[source] += 1
        total += size
        if path == current:
            continue
        if per_source[source] > _CACHE_KEEP_PER_SOURCE or total > _CACHE_MAX_BYTES:
            if per_source[source] > _CACHE_KEEP_PER_SOURCE:
                reason = f"{source} has {_CACHE_KEEP_PER_SOURCE} more recently used builds"
            else:
                reason = f"the cache is over {_CACHE_MAX_BYTES / 2**30:.3g} GiB"
            logger.info("evicting cache entry %s: %s", path, reason)
            shutil.rmtree(path, ignore_errors=True)
            per_source[source] -= 1
            total -= size


def _build_raw_dataset(
    source: _RawSource,
    contents: list[bytes],
    images: dict[str, list[tuple[str, int, int]]],
    duplicates: int,
    masks: dict[str, tuple[str, int, int]] | None,
    on_missing: str,
    cache_root: Path,
    cached: Path,
) -> tuple[Dataset, dict]:
    """Validate the metadata against the files, write the Arrow dataset with `from_generator` and cache it."""
    root, csv_path = source.root, source.files[0]
    rows = source.read(contents)
    rows_read = len(rows)

    listed = {row["image_id"] for row in rows}
    unreferenced = sum(1 for image_id in images if image_id not in listed)
    if unreferenced:
        logger.info("%s: %d image file(s) have no row in %s and are ignored", root, unreferenced, csv_path.name)
    if duplicates:
        logger.info(
            "%s: %d image id(s) have files in several folders; using the copy in the folder holding most images",
            root,
            duplicates,
        )

    absent = [row for row in rows if row["image_id"] not in images]
    if absent and on_missing == "error":
        found = "no image files at all" if not images else f"{len(images)} image files"
        raise FileNotFoundError(
            f"{csv_path.name} lists {_first_ids(absent)} but no image file for it was found under {root} "
            f"({len(absent)} such row(s) of {rows_read}; searched *.jpg/*.jpeg/*.png in all subfolders, found "
            f"{found}). Download the missing images, or pass on_missing='skip' to drop these rows"
        )
    if absent:
        logger.warning(
            "%s: skipping %d metadata row(s) whose image is missing (%s)", root, len(absent), _first_ids(absent)
        )
        rows = [row for row in rows if row["image_id"] in images]
    if not rows:
        raise ValueError(f"no metadata row of {csv_path} has an image file under {root}: nothing to load")

    folder_sizes = Counter(os.path.dirname(relpath) for files in images.values() for relpath, _, _ in files)
    total_bytes = 0
    for row in rows:
        files = images[row["image_id"]]
        # An id in several folders (e.g. a full-resolution sample beside the download): take the main folder's copy.
        relpath, size, _ = min(files, key=lambda file: (-folder_sizes[os.path.dirname(file[0])], file[0]))
        row["image"] = root / relpath
        total_bytes += size
        if masks is not None:
            mask = masks.get(row["image_id"])
            row["mask"] = None if mask is None else root / MASK_FOLDER / mask[0]
            total_bytes += 0 if mask is None else mask[1]
    # Rows per Arrow record batch: datasets' 100 for images, fewer for large files, so that the batch being written
    # (held a few times over while it is encoded) stays within a few MiB whatever the image size.
    writer_batch_size = max(1, min(100, _BATCH_BYTES * len(rows) // max(total_bytes, 1)))
    masks_missing = sum(1 for row in rows if row.get("mask") is None) if masks is not None else 0
    if masks_missing:
        logger.info("%s: %d image(s) have no mask in %s; their mask is None", root, masks_missing, MASK_FOLDER)

    unreadable: list[Path] = []
    unreadable_masks: list[Path] = []
    mask_count = Counter()
    features = ham10000_features(with_mask=masks is not None)

    def generate():
        with tqdm(total=len(rows), desc="Building HAM10000", unit=" images", disable=bars_disabled) as progress:
            for row in rows:
                progress.update()
                data = row["image"].read_bytes()
                if not _is_complete_image(data) or _decode_problem(data):
                    unreadable.append(row["image"])
                    continue
                example = {column: row[column] for column in METADATA_COLUMNS}
                example["image"] = {"bytes": data, "path": None}
                if masks is not None:
                    mask = None
                    if row["mask"] is not None:
                        mask = row["mask"].read_bytes()
                        if not _is_complete_image(mask) or _decode_problem(mask):
                            unreadable_masks.append(row["mask"])
                            mask = None
                    example["mask"] = None if mask is None else {"bytes": mask, "path": None}
                    mask_count[mask is not None] += 1
                yield example

    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_root))
    bars_disabled = are_progress_bars_disabled()
    try:
        disable_progress_bars()  # ours counts images with a total; datasets' own bar would only count rows
        try:
            # fingerprint: skips hashing the closure (all rows); work/ is fresh, so from_generator never reuses.
            built = Dataset.from_generator(
                generate,
                features=features,
                cache_dir=os.fspath(work / "generator"),
                fingerprint=cached.name,
                writer_batch_size=writer_batch_size,
            )
        finally:
            if not bars_disabled:
                enable_progress_bars()
        if unreadable and on_missing == "error":
            raise ValueError(
                f"{len(unreadable)} image file(s) under {root} are not complete JPEG/PNG files (truncated or corrupt"
                f" download): {', '.join(map(str, unreadable[:3]))}{', ...' if len(unreadable) > 3 else ''}. "
                "Re-download them, or pass on_missing='skip' to drop their rows"
            )
        if unreadable_masks and on_missing == "error":
            raise ValueError(
                f"{len(unreadable_masks)} mask file(s) in {root / MASK_FOLDER} are not complete PNG files: "
                f"{', '.join(map(str, unreadable_masks[:3]))}{', ...' if len(unreadable_masks) > 3 else ''}. "
                "Re-download them, or pass on_missing='skip' to set these masks to None (or with_masks=False)"
            )
        if unreadable:
            logger.warning(
                "%s: skipping %d row(s) whose image is unreadable (truncated/corrupt)", root, len(unreadable)
            )
        if unreadable_masks:
            logger.warning("%s: %d unreadable mask(s) set to None", root, len(unreadable_masks))
        if len(built) == 0:
            raise ValueError(f"no readable image for any metadata row of {csv_path}: nothing to load")

        summary = (
            f"{rows_read} rows read, {len(built)} kept, skipped {len(absent)} with missing image and "
            f"{len(unreadable)} with unreadable image; {unreferenced} image file(s) without a metadata row ignored"
        )
        if masks is not None:
            summary += f"; masks for {mask_count[True]} images, none for {mask_count[False]}"
        summary += source.note
        # Move from_generator's Arrow shards into the entry instead of save_to_disk: that would copy them once more
        # and, re-reading them in batches of 1,000 rows, hold ~1,000 images in memory at a time.
        shards = [cache_file["filename"] for cache_file in built.cache_files]
        report = {
            "source": os.path.realpath(root),
            "summary": summary,
            "rows": len(built),
            "cache_version": _CACHE_VERSION,
        }
        report["files"] = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
        del built
        staged = work / "dataset"
        staged.mkdir()
        for shard, name in zip(shards, report["files"]):
            os.replace(shard, staged / name)
        (staged / _BUILD_REPORT).write_text(json.dumps(report, indent=2))  # written last: marks a complete entry
        if cached.exists() and not (cached / _BUILD_REPORT).is_file():
            shutil.rmtree(cached)  # an entry without its report is incomplete or damaged
        try:
            staged.rename(cached)
        except OSError:
            if not (cached / _BUILD_REPORT).is_file():  # not another process that finished the same build first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _open_cached(cached, report), report


def _open_cached(cached: Path, report: dict) -> Dataset:
    """The cache entry's Arrow files, memory-mapped (features, ClassLabel names included, live in their schema)."""
    shards = [Dataset.from_file(os.fspath(cached / name)) for name in report["files"]]
    return shards[0] if len(shards) == 1 else concatenate_datasets(shards)


def _read_metadata(csv_path: Path, csv_bytes: bytes) -> list[dict]:
    """Parse and check HAM10000_metadata.csv: one dict per row with canonical label ids and age."""
    header, raw = _read_csv(csv_path, csv_bytes, METADATA_COLUMNS, "the HAM10000 columns")
    extra = [column for column in header if column not in METADATA_COLUMNS]
    if extra:
        logger.info("%s: ignoring column(s) %s", csv_path, ", ".join(extra))
    return _check_metadata_rows(csv_path, raw)


def _read_csv(csv_path: Path, csv_bytes: bytes, columns: list[str], expected: str) -> tuple[list[str], list[dict]]:
    """The header and the rows (`columns` only, stripped strings) of a UTF-8 CSV file that must have `columns` and
    at least one row; errors name the file, the line and the fix."""
    try:
        text = csv_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = csv_bytes[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{csv_path} is not UTF-8 text: line {line} has byte 0x{csv_bytes[err.start]:02x}, which UTF-8 does not "
            "allow there (saved as latin-1/cp1252 by a spreadsheet?). Save it as UTF-8, e.g. "
            f"`iconv -f cp1252 -t utf-8 {csv_path.name} > fixed.csv`, and check the names it shows"
        ) from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        raw = [{column: (row.get(column) or "").strip() for column in columns} for row in reader]
    except csv.Error as err:  # e.g. a field over csv's size limit: an unclosed quote swallowing the rest of the file
        raise ValueError(
            f'{csv_path}, line {reader.line_num}: cannot parse it as CSV ({err}); look for an unbalanced quote (") '
            "there or above, and save the file as plain comma-separated values"
        ) from err
    missing = [column for column in columns if column not in header]
    if missing:
        raise ValueError(
            f"{csv_path} lacks required column(s) {', '.join(missing)}; found: {', '.join(header) or 'no header'}. "
            f"Expected {expected} {', '.join(columns)}"
        )
    if not raw:
        raise ValueError(f"{csv_path} has a header but no rows")
    return header, raw


def _check_metadata_rows(csv_path: Path, raw: list[dict]) -> list[dict]:
    """Check rows of `METADATA_COLUMNS` strings (row i on line i + 2 of `csv_path`) and encode them: canonical label
    ids and age."""

    def where(row: int) -> str:  # line 1 is the header
        return f"line {row + 2}" + (f" (image_id {raw[row]['image_id']})" if raw[row]["image_id"] else "")

    source = str(csv_path)
    for column in ("image_id", "lesion_id"):
        _check_ids_present(column, [row[column] for row in raw], where, source)
    _refuse_repeated_rows(raw, "image_id", csv_path, "image id")
    labels = {
        column: _encode_labels(column, [row[column] for row in raw], where, source) for column in LABEL_VOCABULARIES
    }
    ages = _parse_ages([row["age"] for row in raw], where, source)
    return [
        {
            "image_id": row["image_id"],
            "lesion_id": row["lesion_id"],
            "age": ages[i],
            **{column: labels[column][i] for column in LABEL_VOCABULARIES},
        }
        for i, row in enumerate(raw)
    ]


def _scan_images(root: Path) -> tuple[dict[str, list[tuple[str, int, int]]], int]:
    """image_id -> [(relative path, size, mtime_ns)] for every image below root (stat only, never read).

    Returns the map and how many ids have files in more than one place. The mask folder and hidden entries are
    skipped. Symbolic links are followed, but each folder is scanned once: a link back up the tree (a loop) or to a
    folder already seen is logged and not followed. Folders are walked in name order, so the result is the same
    on every run.
    """
    images: dict[str, list[tuple[str, int, int]]] = {}
    root_stat = os.stat(root)
    seen = {(root_stat.st_dev, root_stat.st_ino)}
    pending = [root]
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)  # the same walk (and key) on every run
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if folder == root and entry.name == MASK_FOLDER:
                    continue
                stat = entry.stat()
                if (stat.st_dev, stat.st_ino) in seen:
                    logger.info(
                        "%s: symbolic link %s leads to %s, a folder already scanned: not followed",
                        root,
                        os.path.relpath(entry.path, root),
                        os.path.realpath(entry.path),
                    )
                    continue
                seen.add((stat.st_dev, stat.st_ino))
                pending.append(Path(entry.path))
                continue
            name = entry.name.lower()
            if name.endswith(IMAGE_EXTENSIONS) and not name.endswith(MASK_SUFFIX) and entry.is_file():
                stat = entry.stat()
                relpath = os.path.relpath(entry.path, root)
                images.setdefault(os.path.splitext(entry.name)[0], []).append(
                    (relpath, stat.st_size, stat.st_mtime_ns)
                )
    for files in images.values():
        files.sort()
    return images, sum(1 for files in images.values() if len(files) > 1)


def _scan_masks(mask_dir: Path) -> dict[str, tuple[str, int, int]]:
    """image_id -> (file name, size, mtime_ns) for `<image_id>_segmentation.png` in the mask folder."""
    masks = {}
    with os.scandir(mask_dir) as entries:
        for entry in entries:
            if entry.name.lower().endswith(MASK_SUFFIX) and entry.is_file():
                stat = entry.stat()
                masks[entry.name[: -len(MASK_SUFFIX)]] = (entry.name, stat.st_size, stat.st_mtime_ns)
    return masks


def _is_complete_image(data: bytes) -> bool:
    """Cheap completeness check without decoding: JPEG SOI...EOI or PNG signature...IEND."""
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in data[-_TAIL_BYTES:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-_TAIL_BYTES:]
    return False


# ---------------------------------------------------------------------------------------------------------------
# ISIC 2018 Task 3 download (HAM10000's images, one-hot ground truth, lesion groupings; no age, sex or localization)


def _find_isic_file(root: Path, name: str) -> Path | None:
    """`root/name`, else `root/*/name` (the download's zips unpack into a folder of their own), else None."""
    if (root / name).is_file():
        return root / name
    return next((path for path in sorted(root.glob(f"*/{name}")) if path.is_file()), None)


def _isic_source(root: Path) -> _RawSource:
    ground_truth = _find_isic_file(root, ISIC_GROUND_TRUTH)
    groupings = _find_isic_file(root, ISIC_GROUPINGS)
    if groupings is None:
        raise FileNotFoundError(
            f"{root} holds the ISIC 2018 Task 3 ground truth ({ground_truth.relative_to(root)}) but no "
            f"{ISIC_GROUPINGS} (in it or one folder down): that file gives each image's lesion_id, and a split "
            "without lesion ids would put views of one lesion in two splits (a leak). Download the Task 3 "
            "'Training Lesion Groupings' from https://challenge.isic-archive.com/data/#2018 into this folder"
        )
    logger.warning(
        "%s: the ISIC 2018 Task 3 files have no age, sex or localization: every row gets age None and sex and "
        "localization 'unknown', so a multi-input model trained on this data gets no metadata",
        root,
    )
    return _RawSource(
        "isic2018",
        root,
        (ground_truth, groupings),
        lambda contents: _read_isic(ground_truth, contents[0], groupings, contents[1]),
        note="; no age, sex or localization (ISIC 2018 Task 3 files)",
    )


def _read_isic(truth_path: Path, truth_bytes: bytes, groupings_path: Path, groupings_bytes: bytes) -> list[dict]:
    """The ISIC 2018 Task 3 ground truth (one-hot `dx`) joined with its lesion groupings (`lesion_id`, `dx_type`),
    as rows of `_read_metadata`'s shape (age None, sex and localization "unknown"); row i is line i + 2 of the
    ground truth file."""
    _, truth = _read_csv(truth_path, truth_bytes, ["image", *ISIC_DX_COLUMNS], "the ISIC 2018 Task 3 columns")
    group_columns = ["image", "lesion_id", "diagnosis_confirm_type"]
    _, groups = _read_csv(groupings_path, groupings_bytes, group_columns, "the ISIC 2018 Task 3 columns")

    def where_in(rows: list[dict]) -> Callable[[int], str]:
        return lambda row: f"line {row + 2}" + (f" (image {rows[row]['image']})" if rows[row]["image"] else "")

    _check_ids_present("image", [row["image"] for row in truth], where_in(truth), str(truth_path))
    _check_ids_present("image", [row["image"] for row in groups], where_in(groups), str(groupings_path))
    _check_ids_present("lesion_id", [row["lesion_id"] for row in groups], where_in(groups), str(groupings_path))

    dx, not_one_hot = [], []
    for i, row in enumerate(truth):
        values = [_float_or_none(row[column]) for column in ISIC_DX_COLUMNS]
        hot = [column for column, value in zip(ISIC_DX_COLUMNS, values) if value == 1.0]
        if len(hot) == 1 and all(value in (0.0, 1.0) for value in values):
            dx.append(ISIC_DX_COLUMNS[hot[0]])
        else:
            not_one_hot.append(i)
            dx.append("")
    if not_one_hot:
        i = not_one_hot[0]
        values = ", ".join(f"{column}={truth[i][column] or '(empty)'}" for column in ISIC_DX_COLUMNS)
        raise ValueError(
            f"{truth_path}, {where_in(truth)(i)}: the diagnosis is not one-hot ({values}; {len(not_one_hot)} such "
            "row(s)): each row needs 1.0 in exactly one of the columns "
            f"{', '.join(ISIC_DX_COLUMNS)} and 0.0 in the others. Fix the ground truth file"
        )

    _refuse_repeated_rows(groups, "image", groupings_path, "image")
    group_of = {row["image"]: row for row in groups}
    ungrouped = [row for row in truth if row["image"] not in group_of]
    if ungrouped:
        shown = ", ".join(row["image"] for row in ungrouped[:3]) + (", ..." if len(ungrouped) > 3 else "")
        raise ValueError(
            f"{groupings_path} has no row for {shown}, listed in {truth_path.name} ({len(ungrouped)} such image(s)): "
            "without their lesion_id these images cannot be split by lesion. Use the groupings file of the same "
            "(training) download"
        )
    extra = len(group_of) - len({row["image"] for row in truth})
    if extra > 0:
        logger.info("%s: %d row(s) for images not in %s are ignored", groupings_path, extra, truth_path.name)

    unknown: Counter = Counter()

    def dx_type(confirm: str) -> str:
        name = confirm.lower()
        if _is_missing(name) or name in DX_TYPE_LABELS:
            return name
        if name not in ISIC_DX_TYPES:
            unknown[confirm] += 1
        return ISIC_DX_TYPES.get(name, "unknown")

    raw = [
        {
            "image_id": row["image"],
            "lesion_id": group_of[row["image"]]["lesion_id"],
            "dx": dx[i],
            "dx_type": dx_type(group_of[row["image"]]["diagnosis_confirm_type"]),
            "age": "",
            "sex": "",
            "localization": "",
        }
        for i, row in enumerate(truth)
    ]
    if unknown:
        logger.warning(
            "%s: diagnosis_confirm_type %s is none of %s: dx_type 'unknown' for these %d row(s)",
            groupings_path,
            ", ".join(f"{name!r} ({count} row(s))" for name, count in unknown.most_common()),
            ", ".join(map(repr, ISIC_DX_TYPES)),
            sum(unknown.values()),
        )
    return _check_metadata_rows(truth_path, raw)


def _float_or_none(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Checks shared by all sources


def _encode_labels(column: str, values: list, where: Callable[[int], str], source: str) -> list[int]:
    """Canonical ids of label names; empty -> "unknown" (except dx); a name outside the vocabulary is an error."""
    vocabulary = LABEL_VOCABULARIES[column]
    index = {name: i for i, name in enumerate(vocabulary)}
    codes, bad = [], []
    for row, value in enumerate(values):
        if _is_missing(value):
            if column != "dx":
                codes.append(index["unknown"])
                continue
            bad.append((row, ""))
            continue
        code = index.get(str(value).strip().lower())
        if code is None:
            bad.append((row, value))
        codes.append(code)
    if bad:
        row, value = bad[0]
        what = f"{column} {value!r} is not a known value" if value != "" else f"{column} is empty"
        raise ValueError(
            f"{source}, {where(row)}: {what} ({len(bad)} such row(s)). Allowed {column} values: "
            f"{', '.join(vocabulary)}"
            + ("" if column == "dx" else "; leave it empty for 'unknown'")
            + ". Fix the metadata"
        )
    return codes


def _parse_ages(values: list, where: Callable[[int], str], source: str) -> list[float | None]:
    """Ages as floats; empty, `nan`, `NA`, `none`, `null` or NaN -> None (never 0); anything that is not a number
    of years from 0 to 120 (`inf` included) is an error."""
    ages, bad = [], []
    for row, value in enumerate(values):
        if _is_missing(value):
            ages.append(None)
            continue
        try:
            age = float(value)
        except (TypeError, ValueError):
            age = math.inf  # not a number: reported below with the out-of-range ones
        if math.isnan(age):
            ages.append(None)
        elif is_valid_age(age):
            ages.append(age)
        else:
            bad.append((row, value))
            ages.append(None)
    if bad:
        row, value = bad[0]
        raise ValueError(
            f"{source}, {where(row)}: age {value!r} is not a number of years between {MIN_AGE} and {MAX_AGE} "
            f"({len(bad)} such row(s)); fix it, or leave it empty when unknown"
        )
    return ages


def _refuse_repeated_rows(rows: list[dict], column: str, path: Path, what: str) -> None:
    """A CSV (header on line 1) must name each `column` value on one row only: the first repeat is named."""
    lines: dict[str, list[int]] = {}
    for line, row in enumerate(rows, start=2):
        lines.setdefault(row[column], []).append(line)
    repeated = {value: at for value, at in lines.items() if len(at) > 1}
    if repeated:
        value, at = next(iter(repeated.items()))
        raise ValueError(
            f"{path} lists {column} {value} on lines {', '.join(map(str, at))} ({len(repeated)} duplicated "
            f"{what}(s)): each image must appear on exactly one row; remove the duplicate rows"
        )


def _check_ids_present(column: str, values: list, where: Callable[[int], str], source: str) -> None:
    empty = [row for row, value in enumerate(values) if _is_missing(value)]
    if empty:
        raise ValueError(f"{source}, {where(empty[0])}: {column} is empty ({len(empty)} such row(s)); fill it in")


def _check_unique_image_ids(given: dict[str, Dataset], source: str) -> None:
    seen: dict[str, str] = {}
    for name, split in given.items():
        for image_id in column_values(split, "image_id"):
            if image_id in seen:
                raise ValueError(
                    f"{source}: image_id {image_id} appears twice (splits {seen[image_id]!r} and {name!r}); "
                    "each image must appear once"
                )
            seen[image_id] = name


def _leaking_lesions(given: dict[str, Dataset]) -> set[str]:
    owner: dict[str, str] = {}
    leaks = set()
    for name, split in given.items():
        for lesion in set(column_values(split, "lesion_id")):
            if owner.setdefault(lesion, name) != name:
                leaks.add(lesion)
    return leaks


def _split_lesions(lesions: list[str], lesion_dx: dict[str, str], size: float, seed: int, name: str):
    labels = [lesion_dx[lesion] for lesion in lesions]
    try:
        return train_test_split(lesions, test_size=size, random_state=seed, stratify=labels)
    except ValueError as err:
        logger.warning(
            "cannot stratify the %s split of %d lesions by dx (%s): splitting without", name, len(lesions), err
        )
    try:
        return train_test_split(lesions, test_size=size, random_state=seed)
    except ValueError as err:
        raise ValueError(f"cannot split {len(lesions)} lesions into a {name} split of {size:.0%}: {err}") from err


def _check_split_sizes(test_size: float, validation_size: float) -> None:
    if not (0 < test_size < 1 and 0 < validation_size < 1 and test_size + validation_size < 1):
        raise ValueError(
            f"test_size ({test_size}) and validation_size ({validation_size}) must each be in (0, 1) and sum to less "
            "than 1: they are fractions of the lesions"
        )


def column_values(dataset: Dataset, name: str) -> list:
    """One column as a list, honouring any row selection, without touching (or decoding) the other columns."""
    return dataset.select_columns([name]).with_format(None)[name][:]


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null", "na")


def _first_ids(rows: list[dict], limit: int = 3) -> str:
    ids = [row["image_id"] for row in rows[:limit]]
    return ", ".join(ids) + (", ..." if len(rows) > limit else "")


# ----------------------------------------------------------------------------------------------------------------
# The split's arguments, declared once for training, evaluation and dataset preparation

SPLIT_DEFAULTS = {"validation_size": 0.15, "test_size": 0.15, "split_seed": 42, "on_missing": "error"}


@dataclass
class SplitArguments:
    """How HAM10000 is split into lesion-grouped train / validation / test, for every script that splits.

    Fields left at `None` take `SPLIT_DEFAULTS`, or, where a script scores a finished run, the run's own split
    (`hf_skin.runs.RunFolder.split_arguments`): evaluating a run on another split would score its training lesions.
    """

    validation_size: float | None = field(
        default=None, metadata={"help": "Fraction of lesions for validation (default 0.15, or the run's own)."}
    )
    test_size: float | None = field(
        default=None, metadata={"help": "Fraction of lesions for test (default 0.15, or the run's own)."}
    )
    split_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the lesion-grouped split, kept apart from --seed (default 42, or the run's own)."},
    )
    on_missing: str | None = field(
        default=None,
        metadata={
            "help": "Rows whose image is missing or unreadable (any source): 'error' or 'skip' (default error, or "
            "the run's own).",
            "choices": ["error", "skip"],
        },
    )

    def given(self) -> dict:
        """The split arguments set explicitly (not `None`)."""
        return {name: getattr(self, name) for name in SPLIT_DEFAULTS if getattr(self, name) is not None}

    def fill(self, defaults: dict | None = None) -> None:
        """Sets every field still `None` from `defaults` (a run's own), else from `SPLIT_DEFAULTS`; checks them."""
        for name, default in SPLIT_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, (defaults or {}).get(name, default))
        _check_split_sizes(self.test_size, self.validation_size)
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', not {self.on_missing!r}")

    def split_arguments(self) -> dict:
        """The split as a dict of `SPLIT_DEFAULTS`' names (what a run folder records)."""
        return {name: getattr(self, name) for name in SPLIT_DEFAULTS}

    def load_kwargs(self) -> dict:
        """`load_ham10000`'s keyword arguments for this split."""
        return {
            "test_size": self.test_size,
            "validation_size": self.validation_size,
            "seed": self.split_seed,
            "on_missing": self.on_missing,
        }
