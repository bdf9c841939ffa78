"""`load_ham10000`: which kind of source a path or name is, reading it, and splitting it by lesion."""

import logging
import os
from pathlib import Path

from datasets import DatasetDict, concatenate_datasets

from ..locations import is_hub_id
from .checks import check_unique_image_ids
from .schema import SPLITS, column_values
from .sources import (
    ISIC_GROUND_TRUTH,
    ISIC_IMAGE_FOLDER,
    METADATA_FILENAME,
    SAVED_DATASET_FILES,
    find_isic_file,
    ham10000_source,
    isic_source,
    load_dataset_source,
    load_raw_folder,
    normalize_given_splits,
)
from .splits import check_on_missing, check_split_sizes, lesion_grouped_split, shared_lesions

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "marmal88/skin_cancer"


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

    The kind of source is decided by what the path holds (`resolve_source`):

    - a folder with `HAM10000_metadata.csv` (the public download's raw layout: `<image_id>.jpg` anywhere below it,
      masks in `HAM10000_segmentations_lesion_tschandl/`). It is built once into an Arrow cache keyed by the CSV's
      content and, for every image and mask file, its name, size, modification time and first and last 4 KiB; later
      loads of the unchanged folder are memory-mapped from that cache without decoding any image. The cache keeps
      one build per folder (the newest) and drops the builds of folders that no longer exist. Images are stored as
      their file's bytes (not decoded). Symbolic links are followed, each folder scanned once (a link loop is logged
      and not followed). An image id found in several folders (e.g. `full_resolution_sample/` beside the part
      folders) is taken from the folder holding most images; image files without a metadata row are ignored
      (logged).
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
    check_on_missing(on_missing)
    check_split_sizes(test_size, validation_size)
    kind, location = resolve_source(source)
    if kind in ("raw", "isic"):
        raw_source = ham10000_source(location) if kind == "raw" else isic_source(location)
        dataset, summary = load_raw_folder(
            raw_source, on_missing=on_missing, with_masks=with_masks, cache_dir=cache_dir
        )
        given = {"all": dataset}
    else:
        loaded = load_dataset_source(kind, location, cache_dir)
        given, skipped = normalize_given_splits(loaded, str(location), with_masks, on_missing)
        rows = sum(map(len, given.values()))
        summary = (
            f"{rows + skipped} rows read from {len(given)} given split(s) ({', '.join(given)}), {rows} kept, "
            f"skipped {skipped} with unreadable image"
        )

    if len(given) == 1:
        (dataset,) = given.values()
        splits = lesion_grouped_split(dataset, test_size=test_size, validation_size=validation_size, seed=seed)
    else:
        check_unique_image_ids(given, str(location))
        leaks = shared_lesions(given)
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


def resolve_source(source: str | os.PathLike) -> tuple[str, Path | str]:
    """What `load_ham10000` reads `source` as.

    Args:
        source (`str` or `os.PathLike`): a local folder or file, or a Hub dataset id.

    Returns:
        `tuple`: (`"raw"` | `"isic"` | `"disk"` | `"parquet"`, path) for local sources, (`"hub"`, id) otherwise.

    Raises:
        `FileNotFoundError` or `ValueError`: a path that is none of them, saying what it holds and what was expected.
    """
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
        if find_isic_file(path, ISIC_GROUND_TRUTH) is not None:
            return "isic", path
        if any((path / name).is_file() for name in SAVED_DATASET_FILES):
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
            f"Task 3 download), no {'/'.join(SAVED_DATASET_FILES)} "
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
