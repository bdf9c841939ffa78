"""A download folder of image files and metadata CSV files (HAM10000's or ISIC 2018's layout) built into one Arrow
`Dataset`: its images found anywhere below it, checked against the metadata, stored as their files' bytes, cached."""

import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from tqdm.auto import tqdm

from ...labels import METADATA_COLUMNS
from .. import cache
from ..checks import decode_problem, is_complete_image
from ..schema import ham10000_features

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The published lesion segmentations: <image_id>_segmentation.png in this folder of the download.
MASK_FOLDER = "HAM10000_segmentations_lesion_tschandl"
MASK_SUFFIX = "_segmentation.png"
_BATCH_BYTES = 8 * 2**20


@dataclass(frozen=True)
class RawSource:
    """A download folder of image files and metadata CSV files: the files, and how their rows are read."""

    kind: str  # "ham10000" (HAM10000_metadata.csv) or "isic2018": part of the cache key
    root: Path  # images are searched anywhere below it
    files: tuple[Path, ...]  # the metadata CSVs: their whole content keys the cache; files[0] lists the images
    read: Callable[[list[bytes]], list[dict]]  # their contents -> rows with canonical label ids and age
    note: str = ""  # appended to the summary line


def load_raw_folder(source: RawSource, *, on_missing: str, with_masks: bool, cache_dir) -> tuple[Dataset, str]:
    """The raw folder as one `Dataset` (all rows) and a summary line, from the fingerprint-keyed cache or built."""
    root = source.root
    contents = [path.read_bytes() for path in source.files]
    images, duplicates = scan_images(root)
    mask_dir = root / MASK_FOLDER
    use_masks = with_masks and mask_dir.is_dir()
    masks = scan_masks(mask_dir) if use_masks else {}

    # The key: the whole CSV(s), and each file's name, size, mtime and head and tail bytes (see cache.KEY_BYTES).
    files = [file for image_id in sorted(images) for file in images[image_id]]
    files += [(MASK_FOLDER + os.sep + masks[image_id][0], *masks[image_id][1:]) for image_id in sorted(masks)]
    cached = cache.entry_path(cache_dir, source.kind, f"{use_masks} {on_missing}", root, contents, files)

    hit = cache.load_entry(cached)
    if hit is not None:
        logger.info("%s: loaded from cache %s", root, cached)
        dataset, report = hit
        return dataset, report["summary"]

    dataset, report = build_raw_dataset(
        source, contents, images, duplicates, masks if use_masks else None, on_missing, cached
    )
    logger.info("%s: built %s", root, cached)
    cache.evict(cached)
    return dataset, report["summary"]


def build_raw_dataset(
    source: RawSource,
    contents: list[bytes],
    images: dict[str, list[tuple[str, int, int]]],
    duplicates: int,
    masks: dict[str, tuple[str, int, int]] | None,
    on_missing: str,
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
                if not is_complete_image(data) or decode_problem(data):
                    unreadable.append(row["image"])
                    continue
                example = {column: row[column] for column in METADATA_COLUMNS}
                example["image"] = {"bytes": data, "path": None}
                if masks is not None:
                    mask = None
                    if row["mask"] is not None:
                        mask = row["mask"].read_bytes()
                        if not is_complete_image(mask) or decode_problem(mask):
                            unreadable_masks.append(row["mask"])
                            mask = None
                    example["mask"] = None if mask is None else {"bytes": mask, "path": None}
                    mask_count[mask is not None] += 1
                yield example

    with cache.staging_folder(cached) as work:
        bars_disabled = are_progress_bars_disabled()
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
        shards = [cache_file["filename"] for cache_file in built.cache_files]
        report = {"source": os.path.realpath(root), "summary": summary, "rows": len(built)}
        del built
        report = cache.commit_entry(work, shards, report, cached)
    return cache.open_entry(cached, report), report


def read_csv(csv_path: Path, csv_bytes: bytes, columns: list[str], expected: str) -> tuple[list[str], list[dict]]:
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


def scan_images(root: Path) -> tuple[dict[str, list[tuple[str, int, int]]], int]:
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


def scan_masks(mask_dir: Path) -> dict[str, tuple[str, int, int]]:
    """image_id -> (file name, size, mtime_ns) for `<image_id>_segmentation.png` in the mask folder."""
    masks = {}
    with os.scandir(mask_dir) as entries:
        for entry in entries:
            if entry.name.lower().endswith(MASK_SUFFIX) and entry.is_file():
                stat = entry.stat()
                masks[entry.name[: -len(MASK_SUFFIX)]] = (entry.name, stat.st_size, stat.st_mtime_ns)
    return masks


def _first_ids(rows: list[dict], limit: int = 3) -> str:
    ids = [row["image_id"] for row in rows[:limit]]
    return ", ".join(ids) + (", ..." if len(rows) > limit else "")
