"""The checks every source's rows go through: images that would not decode (found at load time, never mid-epoch),
and metadata values (ids present, labels in the vocabulary, ages of 0-120 years). Errors name the row and the fix."""

import io
import logging
import math
from collections.abc import Callable
from pathlib import Path

import PIL.Image
from datasets import Dataset, Image

from ..labels import LABEL_VOCABULARIES, MAX_AGE, MIN_AGE, is_valid_age
from .schema import column_values

logger = logging.getLogger(__name__)

# A complete JPEG ends with the EOI marker FFD9 and a PNG with its IEND chunk; truncated downloads lack them.
# The marker may be followed by a little padding, so look at the tail rather than at the last two bytes only.
_TAIL_BYTES = 1024


# ---------------------------------------------------------------------------------------------------------------
# Images


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

    return check_dataset_images(dataset, source, where, on_missing, full_decode=True, columns=("image",))[0]


def check_dataset_images(
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
        if not is_complete_image(data):
            return f"{what}is a truncated JPEG/PNG (no end marker)"
    problem = decode_problem(data, full_decode)
    return None if problem is None else what + problem


def decode_problem(data: bytes, full_decode: bool = False) -> str | None:
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


def is_complete_image(data: bytes) -> bool:
    """Cheap completeness check without decoding: JPEG SOI...EOI or PNG signature...IEND."""
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in data[-_TAIL_BYTES:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" in data[-_TAIL_BYTES:]
    return False


# ---------------------------------------------------------------------------------------------------------------
# Rows


def check_metadata_rows(csv_path: Path, raw: list[dict]) -> list[dict]:
    """Check rows of `METADATA_COLUMNS` strings (row i on line i + 2 of `csv_path`) and encode them: canonical label
    ids and age."""

    def where(row: int) -> str:  # line 1 is the header
        return f"line {row + 2}" + (f" (image_id {raw[row]['image_id']})" if raw[row]["image_id"] else "")

    source = str(csv_path)
    for column in ("image_id", "lesion_id"):
        check_ids_present(column, [row[column] for row in raw], where, source)
    refuse_repeated_rows(raw, "image_id", csv_path, "image id")
    labels = {
        column: encode_labels(column, [row[column] for row in raw], where, source) for column in LABEL_VOCABULARIES
    }
    ages = parse_ages([row["age"] for row in raw], where, source)
    return [
        {
            "image_id": row["image_id"],
            "lesion_id": row["lesion_id"],
            "age": ages[i],
            **{column: labels[column][i] for column in LABEL_VOCABULARIES},
        }
        for i, row in enumerate(raw)
    ]


def encode_labels(column: str, values: list, where: Callable[[int], str], source: str) -> list[int]:
    """Canonical ids of label names; empty -> "unknown" (except dx); a name outside the vocabulary is an error."""
    vocabulary = LABEL_VOCABULARIES[column]
    index = {name: i for i, name in enumerate(vocabulary)}
    codes, bad = [], []
    for row, value in enumerate(values):
        if is_missing(value):
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


def parse_ages(values: list, where: Callable[[int], str], source: str) -> list[float | None]:
    """Ages as floats; empty, `nan`, `NA`, `none`, `null` or NaN -> None (never 0); anything that is not a number
    of years from 0 to 120 (`inf` included) is an error."""
    ages, bad = [], []
    for row, value in enumerate(values):
        if is_missing(value):
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


def refuse_repeated_rows(rows: list[dict], column: str, path: Path, what: str) -> None:
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


def check_ids_present(column: str, values: list, where: Callable[[int], str], source: str) -> None:
    """Every row has an id in `column` (`image_id`, `lesion_id`): the first empty one is named."""
    empty = [row for row, value in enumerate(values) if is_missing(value)]
    if empty:
        raise ValueError(f"{source}, {where(empty[0])}: {column} is empty ({len(empty)} such row(s)); fill it in")


def check_unique_image_ids(given: dict[str, Dataset], source: str) -> None:
    """No image is in two of the source's given splits (nor twice in one)."""
    seen: dict[str, str] = {}
    for name, split in given.items():
        for image_id in column_values(split, "image_id"):
            if image_id in seen:
                raise ValueError(
                    f"{source}: image_id {image_id} appears twice (splits {seen[image_id]!r} and {name!r}); "
                    "each image must appear once"
                )
            seen[image_id] = name


def is_missing(value) -> bool:
    """Whether a metadata value means "not recorded": None, NaN, or an empty, `nan`, `none`, `null`, `NA` string."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null", "na")
