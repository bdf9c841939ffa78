import csv
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, concatenate_datasets
from datasets import Image as ImageFeature
from PIL import Image

from hf_skin.data import (
    DEFAULT_DATASET,
    MASK_FOLDER,
    class_counts,
    ham10000_features,
    lesion_grouped_split,
    load_ham10000,
    shared_lesions,
)
from hf_skin.data import loading as data_loading
from hf_skin.data.sources import folder as raw_folder
from hf_skin.data.sources import saved as saved_source
from hf_skin.labels import DX_LABELS, DX_TYPE_LABELS, LOCALIZATION_LABELS, METADATA_COLUMNS, SEX_LABELS

REAL_CLASS_COUNTS = {"akiec": 281, "bcc": 440, "bkl": 942, "df": 98, "mel": 954, "nv": 5748, "vasc": 121}
SPLITS = ["train", "validation", "test"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test writes to ~/.cache/hf_skin; loads without cache_dir go to HF_SKIN_CACHE."""
    monkeypatch.setenv("HF_SKIN_CACHE", str(tmp_path / "hf_skin_cache"))


def write_raw_folder(root: Path, lesions_per_class: int = 10, masks: bool = True) -> list[dict]:
    """A tiny HAM10000 download: 7 * lesions_per_class lesions of 1-2 images (8x6 JPEGs) in two part folders."""
    rows = []
    for dx in DX_LABELS:
        for k in range(lesions_per_class):
            lesion_id = f"HAM_{len({row['lesion_id'] for row in rows}):07d}"
            for _ in range(1 + k % 2):
                n = len(rows)
                rows.append(
                    {
                        "lesion_id": lesion_id,
                        "image_id": f"ISIC_{n:07d}",
                        "dx": dx,
                        "dx_type": DX_TYPE_LABELS[n % 4],
                        "age": "" if n % 17 == 3 else f"{20 + n % 60}.0",
                        "sex": ["male", "female", ""][n % 3],
                        "localization": LOCALIZATION_LABELS[n % len(LOCALIZATION_LABELS)],
                    }
                )
    for n, row in enumerate(rows):
        part = root / f"HAM10000_images_part_{1 + n % 2}"
        part.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6), (n % 256, 40, 90)).save(part / f"{row['image_id']}.jpg")
        if masks:
            (root / MASK_FOLDER).mkdir(exist_ok=True)
            Image.new("L", (8, 6), 255).save(root / MASK_FOLDER / f"{row['image_id']}_segmentation.png")
    write_csv(root / "HAM10000_metadata.csv", rows)
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str] = METADATA_COLUMNS) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def raw_dir(tmp_path) -> tuple[Path, list[dict]]:
    root = tmp_path / "HAM10000"
    return root, write_raw_folder(root)


def pooled(splits: DatasetDict) -> dict[str, dict]:
    """image_id -> row (without the image columns) over all splits."""
    rows = {}
    for split in splits.values():
        for row in split.remove_columns([c for c in ("image", "mask") if c in split.column_names]):
            rows[row["image_id"]] = row
    return rows


def lesions_of(split: Dataset) -> set[str]:
    return set(split["lesion_id"][:])


# ----------------------------------------------------------------------------------------------------------------
# Features and raw folders


def test_features_are_canonical():
    features = ham10000_features()
    assert list(features) == ["image", "image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization"]
    assert features["dx"].names == DX_LABELS
    assert features["sex"].names == SEX_LABELS and "unknown" in features["localization"].names
    assert features["age"] == Value("float32")
    assert ham10000_features(with_mask=True)["mask"] == ImageFeature()


def test_raw_folder_loads_with_canonical_labels_and_masks(raw_dir, caplog):
    root, rows = raw_dir
    # A second copy of one image in another folder (like full_resolution_sample/): the main folder's copy wins.
    (root / "full_resolution_sample").mkdir()
    Image.new("RGB", (24, 18), "white").save(root / "full_resolution_sample" / f"{rows[0]['image_id']}.jpg")
    caplog.set_level(logging.INFO, logger="hf_skin.data")

    splits = load_ham10000(root)

    assert list(splits) == SPLITS
    assert sum(map(len, splits.values())) == len(rows)
    for split in splits.values():
        assert split.features == ham10000_features(with_mask=True)
    loaded = pooled(splits)
    for row in rows:
        got = loaded[row["image_id"]]
        assert DX_LABELS[got["dx"]] == row["dx"] and got["lesion_id"] == row["lesion_id"]
        assert DX_TYPE_LABELS[got["dx_type"]] == row["dx_type"]
        assert SEX_LABELS[got["sex"]] == (row["sex"] or "unknown")
        assert LOCALIZATION_LABELS[got["localization"]] == row["localization"]
        assert got["age"] == (float(row["age"]) if row["age"] else None)  # missing age is None, never 0
    # Images are stored as the file's bytes (self-contained, not decoded) and decode lazily.
    raw = splits["train"].cast_column("image", ImageFeature(decode=False))[0]
    part = next(root.glob(f"HAM10000_images_part_*/{raw['image_id']}.jpg"))
    assert raw["image"] == {"bytes": part.read_bytes(), "path": None}
    first = next(s for s in splits.values() if rows[0]["image_id"] in s["image_id"][:])
    example = first[first["image_id"][:].index(rows[0]["image_id"])]
    assert example["image"].size == (8, 6) and example["mask"].size == (8, 6)
    assert "1 image id(s) have files in several folders" in caplog.text
    assert f"{len(rows)} rows read, {len(rows)} kept" in caplog.text
    assert f"HAM10000 from {root}: " in caplog.text and "; splits: train " in caplog.text


def test_raw_folder_without_masks(raw_dir):
    root, rows = raw_dir
    assert "mask" not in load_ham10000(root, with_masks=False)["train"].column_names
    shutil.rmtree(root / MASK_FOLDER)
    assert load_ham10000(root)["train"].features == ham10000_features(with_mask=False)


def test_second_load_is_served_from_cache_and_changes_rebuild(raw_dir, tmp_path, monkeypatch, caplog):
    root, rows = raw_dir
    cache = tmp_path / "cache"
    first = load_ham10000(root, cache_dir=cache)
    (entry,) = cache.glob("ham10000-*")

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the folder did not change")

    # Checking no image either: the cache key reads each file's head and tail, and decodes nothing.
    monkeypatch.setattr(raw_folder, "build_raw_dataset", no_build)
    monkeypatch.setattr(raw_folder, "is_complete_image", no_build)
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    second = load_ham10000(root, cache_dir=cache)
    assert f"loaded from cache {entry}" in caplog.text
    assert second["train"].cache_files and all(str(entry) in f["filename"] for f in second["train"].cache_files)
    assert second["test"]["image_id"][:] == first["test"]["image_id"][:]
    monkeypatch.undo()

    # A changed image (size/mtime) and a changed CSV each give a new cache entry, which replaces the folder's old one.
    Image.new("RGB", (9, 6), "red").save(next(root.glob("HAM10000_images_part_1/*.jpg")))
    load_ham10000(root, cache_dir=cache)
    (changed_image,) = cache.glob("ham10000-*")
    assert changed_image != entry
    write_csv(root / "HAM10000_metadata.csv", rows[:-1])
    assert sum(map(len, load_ham10000(root, cache_dir=cache).values())) == len(rows) - 1
    (changed_csv,) = cache.glob("ham10000-*")
    assert changed_csv not in (entry, changed_image)
    assert not list(cache.glob(".build-*"))  # staging folders are cleaned up

    # A damaged entry (its Arrow data deleted by hand) is rebuilt rather than failing.
    latest = changed_csv
    for arrow in latest.glob("*.arrow"):
        arrow.unlink()
    caplog.clear()
    assert sum(map(len, load_ham10000(root, cache_dir=cache).values())) == len(rows) - 1
    assert f"cache entry {latest} is damaged" in caplog.text


def test_cache_dir_defaults_to_hf_skin_cache_env(raw_dir, tmp_path, monkeypatch):
    root, _ = raw_dir
    monkeypatch.setenv("HF_SKIN_CACHE", str(tmp_path / "env_cache"))
    load_ham10000(root)
    assert len(list((tmp_path / "env_cache").glob("ham10000-*"))) == 1


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_missing_images_error_then_skip(raw_dir, caplog):
    root, rows = raw_dir
    for row in rows[:4]:
        next(root.glob(f"*/{row['image_id']}.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=rf"lists {rows[0]['image_id']}, .* \(4 such row.*on_missing='skip'"):
        load_ham10000(root)
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    splits = load_ham10000(root, on_missing="skip")
    assert sum(map(len, splits.values())) == len(rows) - 4
    assert "skipping 4 metadata row(s) whose image is missing" in caplog.text
    assert "skipped 4 with missing image" in caplog.text


def test_images_without_metadata_row_are_ignored_and_counted(raw_dir, caplog):
    root, rows = raw_dir
    for name in ("ISIC_9999998.jpg", "ISIC_9999999.png"):
        Image.new("RGB", (8, 6)).save(root / "HAM10000_images_part_2" / name)
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    assert sum(map(len, load_ham10000(root).values())) == len(rows)
    assert "2 image file(s) have no row in HAM10000_metadata.csv and are ignored" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_unreadable_image_error_then_skip(raw_dir, damage, caplog):
    root, rows = raw_dir
    path = next(root.glob(f"*/{rows[5]['image_id']}.jpg"))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match=rf"1 image file\(s\) .* not complete JPEG/PNG .*{path.name}.*Re-download"):
        load_ham10000(root)
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    splits = load_ham10000(root, on_missing="skip")
    assert rows[5]["image_id"] not in pooled(splits) and len(pooled(splits)) == len(rows) - 1
    assert "skipping 1 row(s) whose image is unreadable" in caplog.text


def test_unreadable_mask_error_then_none(raw_dir):
    root, rows = raw_dir
    mask = root / MASK_FOLDER / f"{rows[2]['image_id']}_segmentation.png"
    mask.write_bytes(mask.read_bytes()[:20])
    with pytest.raises(ValueError, match=rf"1 mask file\(s\) .*{mask.name}"):
        load_ham10000(root)
    splits = load_ham10000(root, on_missing="skip")
    masks = {
        row["image_id"]: row["mask"]
        for split in splits.values()
        for row in split.cast_column("mask", ImageFeature(decode=False)).remove_columns("image")
    }
    assert masks[rows[2]["image_id"]] is None
    assert sum(mask is None for mask in masks.values()) == 1


def test_csv_without_required_column(raw_dir):
    root, rows = raw_dir
    write_csv(root / "HAM10000_metadata.csv", rows, [c for c in METADATA_COLUMNS if c != "dx"])
    with pytest.raises(ValueError, match=r"lacks required column\(s\) dx; found: lesion_id, image_id, dx_type"):
        load_ham10000(root)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("dx", "melanoma", r"dx 'melanoma' is not a known value \(1 such row\(s\)\). Allowed dx values: akiec, bcc"),
        ("dx", "", r"dx is empty"),
        ("sex", "mal", r"sex 'mal' is not a known value .* Allowed sex values: male, female, unknown"),
        ("localization", "elbow", r"localization 'elbow' is not a known value"),
        ("dx_type", "biopsy", r"dx_type 'biopsy' is not a known value"),
        ("age", "forty", r"age 'forty' is not a number"),
        ("image_id", "", r"image_id is empty"),
        ("lesion_id", "", r"lesion_id is empty"),
    ],
)
def test_bad_metadata_value_names_the_row(raw_dir, column, value, message):
    root, rows = raw_dir
    rows[3][column] = value
    write_csv(root / "HAM10000_metadata.csv", rows)
    where = "line 5" if column == "image_id" else f"line 5 \\(image_id {rows[3]['image_id']}\\)"
    with pytest.raises(ValueError, match=f"{where}: {message}"):
        load_ham10000(root)


def test_empty_metadata_values_become_unknown_or_none(raw_dir):
    root, rows = raw_dir
    for column in ("sex", "localization", "dx_type", "age"):
        rows[0][column] = ""
    write_csv(root / "HAM10000_metadata.csv", rows)
    row = pooled(load_ham10000(root))[rows[0]["image_id"]]
    assert (row["sex"], row["localization"], row["dx_type"]) == (
        SEX_LABELS.index("unknown"),
        LOCALIZATION_LABELS.index("unknown"),
        DX_TYPE_LABELS.index("unknown"),
    )
    assert row["age"] is None


def test_duplicate_image_rows(raw_dir):
    root, rows = raw_dir
    write_csv(root / "HAM10000_metadata.csv", rows + [rows[1]])
    with pytest.raises(ValueError, match=rf"image_id {rows[1]['image_id']} on lines 3, {len(rows) + 2} \(1 dupl"):
        load_ham10000(root)


def test_lesion_with_two_diagnoses(raw_dir):
    root, rows = raw_dir
    rows[2]["dx"] = "nv"  # rows 1 and 2 are the two images of lesion HAM_0000001 (akiec)
    write_csv(root / "HAM10000_metadata.csv", rows)
    with pytest.raises(ValueError, match=r"1 lesion\(s\) have images with different dx \(HAM_0000001: akiec, nv\)"):
        load_ham10000(root)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_ham10000(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        load_ham10000(tmp_path / "empty")
    images = tmp_path / "images_only" / "HAM10000_images_part_1"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(images / "ISIC_0000001.jpg")
    with pytest.raises(FileNotFoundError, match="has no HAM10000_metadata.csv .* it holds HAM10000_images_part_1"):
        load_ham10000(tmp_path / "images_only")
    with pytest.raises(FileNotFoundError, match=f"did you mean {tmp_path / 'images_only'}"):
        write_csv(tmp_path / "images_only" / "HAM10000_metadata.csv", [])
        load_ham10000(tmp_path)
    with pytest.raises(ValueError, match="has a header but no rows"):
        load_ham10000(tmp_path / "images_only")
    write_csv(tmp_path / "csv_only.csv", [])
    with pytest.raises(ValueError, match="neither a parquet file nor HAM10000_metadata.csv"):
        load_ham10000(tmp_path / "csv_only.csv")


def test_folder_without_any_image(tmp_path, raw_dir):
    _, rows = raw_dir
    (tmp_path / "csv_only").mkdir()
    write_csv(tmp_path / "csv_only" / "HAM10000_metadata.csv", rows)
    with pytest.raises(FileNotFoundError, match=rf"\({len(rows)} such row\(s\) of {len(rows)}.*found no image files"):
        load_ham10000(tmp_path / "csv_only")


def test_metadata_not_utf8_names_the_line(raw_dir):
    root, rows = raw_dir
    write_csv(root / "HAM10000_metadata.csv", rows)
    text = (root / "HAM10000_metadata.csv").read_bytes().decode()
    # Excel on Windows saves latin-1/cp1252: one é in a lesion id on the 4th data row (line 5).
    lines = text.splitlines(keepends=True)
    lines[4] = lines[4].replace(rows[3]["lesion_id"], rows[3]["lesion_id"] + "é", 1)
    (root / "HAM10000_metadata.csv").write_bytes("".join(lines).encode("latin-1"))
    with pytest.raises(ValueError, match=r"HAM10000_metadata.csv is not UTF-8 text: line 5 has byte 0xe9.*as UTF-8"):
        load_ham10000(root)


@pytest.mark.parametrize("age", ["inf", "-inf", "Infinity", "1e400", "-1", "121", "250.5"])
def test_age_outside_0_to_120_names_the_row(raw_dir, age):
    root, rows = raw_dir
    rows[3]["age"] = age
    write_csv(root / "HAM10000_metadata.csv", rows)
    with pytest.raises(
        ValueError,
        match=rf"line 5 \(image_id {rows[3]['image_id']}\): age '{age}' is not a number of years between 0 and 120 "
        r"\(1 such row\(s\)\); fix it, or leave it empty when unknown",
    ):
        load_ham10000(root)


def test_nan_age_strings_are_missing(raw_dir):
    root, rows = raw_dir
    for row, age in zip(rows[:4], ["nan", "NaN", "NA", " null "]):
        row["age"] = age
    write_csv(root / "HAM10000_metadata.csv", rows)
    loaded = pooled(load_ham10000(root))
    assert [loaded[row["image_id"]]["age"] for row in rows[:4]] == [None] * 4


def test_csv_syntax_error_is_a_value_error_naming_the_file(raw_dir):
    root, rows = raw_dir
    write_csv(root / "HAM10000_metadata.csv", rows)
    with open(root / "HAM10000_metadata.csv", "a") as f:
        f.write('HAM_9,ISIC_9,nv,histo,40,male,"' + "x" * 200_000 + '"\n')  # over csv's field size limit
    with pytest.raises(ValueError, match=r"HAM10000_metadata.csv, line \d+: cannot parse it as CSV"):
        load_ham10000(root)


def test_symlink_loop_in_image_folders_is_scanned_once(raw_dir, caplog):
    root, rows = raw_dir
    (root / "HAM10000_images_part_1" / "loop").symlink_to(root, target_is_directory=True)
    (root / "HAM10000_images_part_2" / "self").symlink_to(".", target_is_directory=True)
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    splits = load_ham10000(root)
    assert len(pooled(splits)) == len(rows)
    assert "several folders" not in caplog.text  # no image is seen twice through the loop
    assert "symbolic link" in caplog.text and "already scanned" in caplog.text


def test_replaced_image_with_same_size_and_mtime_rebuilds(raw_dir, tmp_path):
    root, rows = raw_dir
    cache = tmp_path / "cache"
    load_ham10000(root, cache_dir=cache)
    target = next(root.glob(f"*/{rows[0]['image_id']}.jpg"))
    before = target.stat()
    # Another image of exactly the same size (the tiny JPEGs of write_raw_folder mostly are).
    new_bytes = next(
        content
        for path in sorted(root.glob("HAM10000_images_part_*/*.jpg"))
        if len(content := path.read_bytes()) == before.st_size and content != target.read_bytes()
    )
    target.write_bytes(new_bytes)  # e.g. restored from a backup that keeps times: same size, same mtime
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_mtime_ns == before.st_mtime_ns

    first_entries = set(cache.glob("ham10000-*"))
    splits = load_ham10000(root, cache_dir=cache)
    assert set(cache.glob("ham10000-*")).isdisjoint(first_entries)  # a new build, not the old entry
    stored = {
        row["image_id"]: row["image"]["bytes"]
        for split in splits.values()
        for row in split.select_columns(["image_id", "image"]).cast_column("image", ImageFeature(decode=False))
    }
    assert stored[rows[0]["image_id"]] == new_bytes


def test_cache_keeps_the_newest_build_of_each_folder(raw_dir, tmp_path, caplog):
    root, rows = raw_dir
    cache = tmp_path / "cache"
    load_ham10000(root, cache_dir=cache)
    (first,) = cache.glob("ham10000-*")
    # Another load option is another build of the same folder: it replaces the first.
    load_ham10000(root, cache_dir=cache, on_missing="skip")
    (second,) = cache.glob("ham10000-*")
    assert second != first
    # A hit builds nothing, so it evicts nothing.
    load_ham10000(root, cache_dir=cache, on_missing="skip")
    assert list(cache.glob("ham10000-*")) == [second]

    # Another folder's build leaves this folder's entry alone.
    other = tmp_path / "other"
    write_raw_folder(other, lesions_per_class=2)
    load_ham10000(other, cache_dir=cache)
    (other_entry,) = set(cache.glob("ham10000-*")) - {second}
    assert json.loads((other_entry / "hf_skin_build.json").read_text())["rows"] == 21

    # The next build sweeps the staging folder of a build killed two days ago (not one that may still be running),
    # and the entries of folders that no longer exist.
    stale, running = cache / ".build-crashed", cache / ".build-running"
    stale.mkdir()
    running.mkdir()
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    shutil.rmtree(other)
    write_csv(root / "HAM10000_metadata.csv", rows[:-1])
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    load_ham10000(root, cache_dir=cache)
    (kept,) = cache.glob("ham10000-*")
    assert kept not in (first, second, other_entry)
    assert json.loads((kept / "hf_skin_build.json").read_text())["rows"] == len(rows) - 1
    assert list(cache.glob(".build-*")) == [running]
    assert f"evicting cache entry {second}: {os.path.realpath(root)} was built again" in caplog.text
    assert f"evicting cache entry {other_entry}: the folder it was built from" in caplog.text


def test_bad_arguments(raw_dir):
    root, _ = raw_dir
    with pytest.raises(ValueError, match="on_missing must be 'error' or 'skip'"):
        load_ham10000(root, on_missing="ignore")
    with pytest.raises(ValueError, match="must each be in \\(0, 1\\) and sum to less than 1"):
        load_ham10000(root, test_size=0.5, validation_size=0.5)
    with pytest.raises(ValueError, match="must each be in"):
        load_ham10000(root, validation_size=0)


def test_offline_hub_id_gives_a_clear_error(tmp_path):
    for source in ("marmal88/skin_cancer", DEFAULT_DATASET):
        with pytest.raises(
            ConnectionError, match=r"no network/Hub access.*--dataset /path/to/HAM10000.*hf_skin.synthetic"
        ):
            load_ham10000(source, cache_dir=tmp_path)


@pytest.mark.parametrize("reachable", [False, True])
def test_hub_dataset_loads_offline_only_while_the_hub_does_not_answer(tmp_path, monkeypatch, reachable):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(saved_source, "hub_reachable", lambda: reachable)
    seen = []

    def load_dataset(path, cache_dir=None):
        seen.append(datasets.config.HF_HUB_OFFLINE)
        raise FileNotFoundError(f"{path} is not in the cache")  # what datasets raises offline for an uncached id

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    if reachable:  # online, a missing dataset is not a network problem: datasets' own error
        with pytest.raises(FileNotFoundError, match="not in the cache"):
            load_ham10000("someone/ham10000", cache_dir=tmp_path)
    else:
        with pytest.raises(ConnectionError, match="cannot load the Hub dataset 'someone/ham10000'"):
            load_ham10000("someone/ham10000", cache_dir=tmp_path)
    assert seen == [not reachable]  # datasets' offline mode during the load only when the Hub does not answer
    assert datasets.config.HF_HUB_OFFLINE is False  # and as it was after it


# ----------------------------------------------------------------------------------------------------------------
# Other sources: save_to_disk, parquet (marmal88/skin_cancer schema: labels as strings or in another order)


def marmal88_splits(rows: list[dict], root: Path, dx_feature=None) -> DatasetDict:
    """The raw rows as a Hub-style DatasetDict, split by image (so lesions leak), plus an unused column."""
    features = Features(
        {
            "image": ImageFeature(),
            "image_id": Value("string"),
            "lesion_id": Value("string"),
            "dx": dx_feature or Value("string"),
            "dx_type": Value("string"),
            "age": Value("float64"),
            "sex": Value("string"),
            "localization": Value("string"),
            "extra": Value("int64"),
        }
    )
    columns = {name: [] for name in features}
    for n, row in enumerate(rows):
        path = next(root.glob(f"*/{row['image_id']}.jpg"))
        columns["image"].append({"bytes": path.read_bytes(), "path": None})
        for name in ("image_id", "lesion_id", "dx", "dx_type", "sex", "localization"):
            columns[name].append(row[name])
        columns["age"].append(float(row["age"]) if row["age"] else math.nan)  # pandas-style missing age
        columns["extra"].append(n)
    everything = Dataset.from_dict(columns, features=features)
    by_image = {name: [n for n in range(len(rows)) if n % 3 == k] for k, name in enumerate(SPLITS)}
    return DatasetDict({name: everything.select(indices) for name, indices in by_image.items()})


def assert_canonical(splits: DatasetDict, rows: list[dict]) -> None:
    assert list(splits) == SPLITS
    for split in splits.values():
        assert split.features == ham10000_features()
    loaded = pooled(splits)
    assert len(loaded) == len(rows)
    for row in rows:
        got = loaded[row["image_id"]]
        assert got["dx"] == DX_LABELS.index(row["dx"])  # canonical id, whatever the source's label order
        assert SEX_LABELS[got["sex"]] == (row["sex"] or "unknown")
        assert got["age"] == (float(row["age"]) if row["age"] else None)


@pytest.mark.parametrize("dx_feature", [None, ClassLabel(names=sorted(DX_LABELS, reverse=True))])
def test_save_to_disk_round_trip_with_leaky_splits(raw_dir, tmp_path, caplog, dx_feature):
    root, rows = raw_dir
    given = marmal88_splits(rows, root, dx_feature)
    given.save_to_disk(tmp_path / "saved")
    caplog.set_level(logging.INFO, logger="hf_skin.data")

    resplit = load_ham10000(tmp_path / "saved", cache_dir=tmp_path / "cache")

    assert_canonical(resplit, rows)
    assert "share" in caplog.text and "lesion(s)" in caplog.text and "splitting again by lesion" in caplog.text
    assert "dropping column(s) not used by hf_skin: extra" in caplog.text
    train, validation, test = (lesions_of(resplit[name]) for name in SPLITS)
    assert not (train & validation or train & test or validation & test)
    from_raw = load_ham10000(root)  # same rows, same seed: the same lesion split whatever the source
    assert {n: sorted(s["image_id"][:]) for n, s in resplit.items()} == {
        n: sorted(s["image_id"][:]) for n, s in from_raw.items()
    }

    caplog.clear()
    kept = load_ham10000(tmp_path / "saved", resplit=False, cache_dir=tmp_path / "cache")
    assert_canonical(kept, rows)
    assert {name: kept[name]["image_id"][:] for name in SPLITS} == {name: given[name]["image_id"] for name in SPLITS}
    assert "keeping them because resplit=False" in caplog.text


def test_parquet_folder_and_file(raw_dir, tmp_path, caplog):
    root, rows = raw_dir
    given = marmal88_splits(rows, root)
    (tmp_path / "parquet").mkdir()
    for name, split in given.items():
        split.to_parquet(tmp_path / "parquet" / f"{name}.parquet")
    caplog.set_level(logging.WARNING, logger="hf_skin.data")

    splits = load_ham10000(tmp_path / "parquet", cache_dir=tmp_path / "cache")
    assert_canonical(splits, rows)
    assert "share" in caplog.text
    kept = load_ham10000(tmp_path / "parquet", resplit=False, cache_dir=tmp_path / "cache")
    assert kept["validation"]["image_id"][:] == given["validation"]["image_id"]

    # One file: one split, so it is split by lesion (and resplit=False has nothing to keep).
    single = tmp_path / "all.parquet"
    Dataset.from_list([r for split in given.values() for r in split]).to_parquet(single)
    assert_canonical(load_ham10000(single, cache_dir=tmp_path / "cache"), rows)


def test_dataset_source_errors(raw_dir, tmp_path):
    root, rows = raw_dir
    given = marmal88_splits(rows, root)
    given.remove_columns("lesion_id").save_to_disk(tmp_path / "no_lesion")
    with pytest.raises(
        ValueError, match=r"split 'train' lacks required column\(s\) lesion_id; found: image, image_id"
    ):
        load_ham10000(tmp_path / "no_lesion")

    DatasetDict({"train": given["train"], "test": given["test"]}).save_to_disk(tmp_path / "two_splits")
    with pytest.raises(ValueError, match="no 'validation': resplit=False keeps the given splits"):
        load_ham10000(tmp_path / "two_splits", resplit=False)
    assert list(load_ham10000(tmp_path / "two_splits")) == SPLITS

    bad = (
        given["train"]
        .cast_column("dx", Value("string"))
        .map(lambda r, i: {"dx": "mel?" if i == 2 else r["dx"]}, with_indices=True)
    )
    bad.save_to_disk(tmp_path / "bad_dx")
    with pytest.raises(ValueError, match=rf"row 2 \(image_id {bad[2]['image_id']}\): dx 'mel\?' is not a known"):
        load_ham10000(tmp_path / "bad_dx")

    DatasetDict({"train": given["train"], "validation": given["train"], "test": given["test"]}).save_to_disk(
        tmp_path / "repeated"
    )
    with pytest.raises(ValueError, match=r"image_id \S+ appears twice \(splits 'train' and 'validation'\)"):
        load_ham10000(tmp_path / "repeated")


# ----------------------------------------------------------------------------------------------------------------
# Bad images in parquet / save_to_disk / Hub sources: found at load time, never mid-epoch


def damaged_splits(rows, root, damage: str) -> tuple[DatasetDict, str]:
    """marmal88_splits with one image of the train split damaged; returns it and that image's id."""
    given = marmal88_splits(rows, root)
    train = given["train"].cast_column("image", ImageFeature(decode=False))
    bad_id = train[2]["image_id"]
    jpeg = train[2]["image"]["bytes"]
    value = {
        "null": None,
        "empty": {"bytes": b"", "path": None},
        "not_an_image": {"bytes": b"<html>404 Not Found</html>", "path": None},
        "truncated": {"bytes": jpeg[: len(jpeg) // 2], "path": None},
        "path": {"bytes": None, "path": "/nowhere/ISIC_0000000.jpg"},
        "garbage_in_jpeg": {"bytes": b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9", "path": None},
    }[damage]
    images = [value if n == 2 else image for n, image in enumerate(train["image"][:])]
    train = train.remove_columns("image").add_column("image", images, feature=ImageFeature(decode=False))
    given["train"] = train.cast_column("image", ImageFeature())
    return given, bad_id


DAMAGES = ["null", "empty", "not_an_image", "truncated", "garbage_in_jpeg"]


# A path to no file cannot go to disk or parquet (both embed the file's bytes): only an in-memory source has one.
@pytest.mark.parametrize(
    ("kind", "damage"),
    [(kind, damage) for kind in ("disk", "parquet") for damage in DAMAGES] + [("hub", d) for d in DAMAGES + ["path"]],
)
def test_bad_image_in_dataset_sources_error_then_skip(raw_dir, tmp_path, monkeypatch, caplog, kind, damage):
    root, rows = raw_dir
    given, bad_id = damaged_splits(rows, root, damage)
    if kind == "disk":
        given.save_to_disk(tmp_path / "source")
        source = tmp_path / "source"
    elif kind == "parquet":
        (tmp_path / "source").mkdir()
        for name, split in given.items():
            split.to_parquet(tmp_path / "source" / f"{name}.parquet")
        source = tmp_path / "source"
    else:  # what datasets.load_dataset gives for a Hub id, without the network
        monkeypatch.setattr(data_loading, "load_dataset_source", lambda kind, location, cache_dir: given)
        source = "someone/ham10000"
    with pytest.raises(ValueError, match=rf"split 'train', row 2 \(image_id {bad_id}\): .*on_missing='skip'"):
        load_ham10000(source, cache_dir=tmp_path / "cache")

    caplog.set_level(logging.INFO, logger="hf_skin.data")
    splits = load_ham10000(source, cache_dir=tmp_path / "cache", on_missing="skip")
    loaded = pooled(splits)
    assert bad_id not in loaded and len(loaded) == len(rows) - 1
    assert f"skipping 1 row(s) whose image is null or unreadable ({bad_id})" in caplog.text
    assert "1 with unreadable image" in caplog.text  # in the summary line too
    for split in splits.values():  # every image that is left decodes: training cannot meet a bad one
        assert all(image.size == (8, 6) for image in split["image"])


def test_bad_mask_in_dataset_source_error_then_none(raw_dir, tmp_path):
    root, rows = raw_dir
    splits = load_ham10000(root)
    train = splits["train"].cast_column("mask", ImageFeature(decode=False))
    masks = train["mask"][:]
    masks[1] = {"bytes": b"\x89PNG\r\n\x1a\n broken", "path": None}
    train = train.remove_columns("mask").add_column("mask", masks, feature=ImageFeature(decode=False))
    DatasetDict({**splits, "train": train.cast_column("mask", ImageFeature())}).save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match=rf"row 1 \(image_id {train[1]['image_id']}\): mask .*with_masks=False"):
        load_ham10000(tmp_path / "saved")
    loaded = load_ham10000(tmp_path / "saved", on_missing="skip")
    stored = {
        row["image_id"]: row["mask"]
        for split in loaded.values()
        for row in split.select_columns(["image_id", "mask"]).cast_column("mask", ImageFeature(decode=False))
    }
    assert len(stored) == len(rows) and stored[train[1]["image_id"]] is None
    assert sum(mask is None for mask in stored.values()) == 1


@pytest.mark.parametrize("age", [math.inf, -3.0, 130.0])
def test_age_outside_0_to_120_in_dataset_source(raw_dir, tmp_path, age):
    root, rows = raw_dir
    given = marmal88_splits(rows, root)
    given["train"] = given["train"].map(lambda r, i: {"age": age if i == 1 else r["age"]}, with_indices=True)
    given.save_to_disk(tmp_path / "saved")
    with pytest.raises(
        ValueError, match=rf"split 'train', row 1 \(image_id \S+\): age {age!r} is not a number of years"
    ):
        load_ham10000(tmp_path / "saved")


# ----------------------------------------------------------------------------------------------------------------
# Splits


def test_lesion_grouped_split_is_deterministic_and_grouped(synthetic_dir):
    dataset = concatenate_datasets(list(load_ham10000(synthetic_dir, with_masks=False).values()))
    first = lesion_grouped_split(dataset, seed=42)
    again = lesion_grouped_split(dataset, seed=42)
    other = lesion_grouped_split(dataset, seed=7)

    ids = {name: split["image_id"][:] for name, split in first.items()}
    assert ids == {name: split["image_id"][:] for name, split in again.items()}
    assert ids != {name: split["image_id"][:] for name, split in other.items()}
    assert sorted(sum(ids.values(), [])) == sorted(dataset["image_id"][:])
    for splits in (first, other):
        train, validation, test = (lesions_of(splits[name]) for name in SPLITS)
        assert not (train & validation or train & test or validation & test)
    # Sizes are fractions of lesions.
    lesions = len(set(dataset["lesion_id"][:]))
    assert abs(len(lesions_of(first["test"])) - 0.15 * lesions) <= 1
    assert abs(len(lesions_of(first["validation"])) - 0.15 * lesions) <= 1
    # Row order does not change the split: it depends on the lesions and the seed only.
    shuffled = lesion_grouped_split(dataset.shuffle(seed=0), seed=42)
    assert {n: sorted(s["image_id"][:]) for n, s in shuffled.items()} == {n: sorted(v) for n, v in ids.items()}


def test_tiny_dataset_falls_back_to_an_unstratified_split(caplog):
    # 9 lesions, one class with a single lesion: stratification is impossible, grouping still holds.
    dx = ["nv"] * 6 + ["mel", "mel", "df"]
    dataset = Dataset.from_dict({"lesion_id": [f"L{i}" for i in range(9)] * 2, "dx": dx * 2})
    caplog.set_level(logging.WARNING, logger="hf_skin.data")
    splits = lesion_grouped_split(dataset, test_size=0.2, validation_size=0.2, seed=0)
    assert "cannot stratify the test split of 9 lesions by dx" in caplog.text
    assert [len(lesions_of(splits[name])) for name in SPLITS] == [5, 2, 2]
    assert all(len(split) == 2 * len(lesions_of(split)) for split in splits.values())


def test_class_counts_lists_every_class():
    dataset = Dataset.from_dict({"dx": [4, 4, 5]}, features=Features({"dx": ClassLabel(names=DX_LABELS)}))
    assert class_counts(dataset) == {"akiec": 0, "bcc": 0, "bkl": 0, "df": 0, "mel": 2, "nv": 1, "vasc": 0}
    assert class_counts(Dataset.from_dict({"dx": ["nv", "nv"]}))["nv"] == 2
    # Ids are read by the dataset's own names (here in another order), and a selection of rows is honoured.
    reordered = Features({"dx": ClassLabel(names=sorted(DX_LABELS, reverse=True))})  # vasc, nv, mel, ...
    counts = class_counts(Dataset.from_dict({"dx": [0, 1, 1, 2]}, features=reordered).select([0, 1]))
    assert (counts["vasc"], counts["nv"], counts["mel"], sum(counts.values())) == (1, 1, 0, 2)


def test_shared_lesions_across_datasets_and_id_lists():
    train = Dataset.from_dict({"lesion_id": ["L1", "L1", "L2"], "dx": [0, 0, 1]})
    test = Dataset.from_dict({"lesion_id": ["L3", "L2"], "dx": [1, 1]})
    assert shared_lesions({"train": train, "test": test}) == {"L2"}
    assert shared_lesions({"train": train, "test": test.select([0])}) == set()
    # A split given as its lesion ids: e.g. the lesions a run trained on, against an evaluation split.
    assert shared_lesions({"test": test, "trained on": ["L3", "L9"]}) == {"L3"}
    assert shared_lesions({"train": train}) == set()  # a lesion's several images in one split are no leak


# ----------------------------------------------------------------------------------------------------------------
# The real data (../shared/ham10000): built once per session into a session cache


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_cache")


@pytest.fixture(scope="session")
def real_splits(real_ham_dir, real_cache) -> DatasetDict:
    return load_ham10000(real_ham_dir, cache_dir=real_cache)


def test_real_ham10000(real_ham_dir, real_splits):
    splits = real_splits
    assert list(splits) == SPLITS
    assert sum(map(len, splits.values())) == 8584
    totals = Counter()
    for split in splits.values():
        assert split.features == ham10000_features(with_mask=True)
        totals.update(class_counts(split))
    assert dict(totals) == REAL_CLASS_COUNTS

    train, validation, test = (lesions_of(splits[name]) for name in SPLITS)
    assert not (train & validation or train & test or validation & test)
    assert len(train | validation | test) == 6403
    for split in splits.values():  # stratified: each class's share within 2 points of its overall share
        counts = class_counts(split)
        for label, total in REAL_CLASS_COUNTS.items():
            assert abs(counts[label] / len(split) - total / 8584) < 0.02, (split.split, label)

    ages = [age for split in splits.values() for age in split["age"][:]]
    assert sum(age is None for age in ages) == 49
    with open(real_ham_dir / "HAM10000_metadata.csv") as f:
        csv_ages = {row["image_id"]: row["age"] for row in csv.DictReader(f)}
    loaded = pooled(splits)
    assert all((loaded[i]["age"] is None) == (age == "") for i, age in csv_ages.items())

    masks = [
        mask
        for split in splits.values()
        for mask in split.select_columns("mask").cast_column("mask", ImageFeature(decode=False))["mask"][:]
    ]
    assert len(masks) == 8584 and all(mask is not None and mask["bytes"] for mask in masks)
    example = splits["test"][0]
    assert example["image"].size == (200, 150) and example["mask"].size == (600, 450)


def test_real_ham10000_second_load_from_cache(real_ham_dir, real_splits, real_cache, monkeypatch, caplog):
    def no_build(*args, **kwargs):
        raise AssertionError("the unchanged real folder was rebuilt")

    monkeypatch.setattr(raw_folder, "build_raw_dataset", no_build)
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    again = load_ham10000(real_ham_dir, cache_dir=real_cache)
    (entry,) = real_cache.glob("ham10000-*")
    assert f"loaded from cache {entry}" in caplog.text
    assert {n: s["image_id"][:] for n, s in again.items()} == {n: s["image_id"][:] for n, s in real_splits.items()}
    assert all(str(entry) in f["filename"] for s in again.values() for f in s.cache_files)  # memory-mapped
