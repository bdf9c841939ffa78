"""`load_ham10000` on the ISIC 2018 Task 3 download layout: the same rows, labels, lesions and split as the HAM10000
layout of the same images, and clear errors where the ISIC files cannot be used."""

import csv
import logging
import shutil
from pathlib import Path

import pytest
from datasets import Image as ImageFeature

from hf_skin.data import (
    ISIC_DX_COLUMNS,
    ISIC_DX_TYPES,
    ISIC_GROUND_TRUTH,
    ISIC_GROUPINGS,
    ISIC_IMAGE_FOLDER,
    METADATA_COLUMNS,
    METADATA_FILENAME,
    ham10000_features,
    load_ham10000,
)
from hf_skin.data.sources import folder as raw_folder

CONFIRM_TYPES = {dx_type: confirm for confirm, dx_type in ISIC_DX_TYPES.items()}
LESIONS_PER_CLASS = 5


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_SKIN_CACHE", str(tmp_path / "hf_skin_cache"))


def read_rows(ham_dir: Path) -> list[dict]:
    with open(ham_dir / METADATA_FILENAME, newline="") as f:
        return list(csv.DictReader(f))


def some_lesions(rows: list[dict], per_class: int = LESIONS_PER_CLASS) -> list[dict]:
    """All rows of the first `per_class` lesions of each diagnosis (whole lesions, so that grouping is tested)."""
    chosen: dict[str, list[str]] = {}
    for row in rows:
        lesions = chosen.setdefault(row["dx"], [])
        if row["lesion_id"] not in lesions and len(lesions) < per_class:
            lesions.append(row["lesion_id"])
    keep = {lesion for lesions in chosen.values() for lesion in lesions}
    return [row for row in rows if row["lesion_id"] in keep]


def image_files(ham_dir: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(ham_dir.glob("HAM10000_images_part_*/*.jpg"))}


def write_ham_layout(out: Path, rows: list[dict], files: dict[str, Path]) -> Path:
    (out / "HAM10000_images_part_1").mkdir(parents=True)
    for row in rows:
        shutil.copy(files[row["image_id"]], out / "HAM10000_images_part_1")
    with open(out / METADATA_FILENAME, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return out


def write_isic_layout(out: Path, rows: list[dict], files: dict[str, Path], nested: bool = False) -> Path:
    """The ISIC 2018 Task 3 training download of these rows: images, one-hot ground truth, lesion groupings. With
    `nested`, each file sits one folder down, as the download's zips unpack."""
    images = out / ISIC_IMAGE_FOLDER / (ISIC_IMAGE_FOLDER if nested else "")
    truth = out / ("ISIC2018_Task3_Training_GroundTruth" if nested else "") / ISIC_GROUND_TRUTH
    groupings = out / ("ISIC2018_Task3_Training_LesionGroupings" if nested else "") / ISIC_GROUPINGS
    for folder in (images, truth.parent, groupings.parent):
        folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        shutil.copy(files[row["image_id"]], images)
    with open(truth, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *ISIC_DX_COLUMNS])
        for row in rows:
            writer.writerow(
                [row["image_id"], *("1.0" if dx == row["dx"] else "0.0" for dx in ISIC_DX_COLUMNS.values())]
            )
    with open(groupings, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "lesion_id", "diagnosis_confirm_type"])
        writer.writerows([row["image_id"], row["lesion_id"], CONFIRM_TYPES[row["dx_type"]]] for row in rows)
    return out


def labelled(splits) -> dict[str, dict[str, dict]]:
    """split -> image_id -> its labels as names (no images)."""
    names = {column: ham10000_features()[column].int2str for column in ("dx", "dx_type", "sex", "localization")}
    return {
        split_name: {
            row["image_id"]: {
                "lesion_id": row["lesion_id"],
                "age": row["age"],
                **{column: to_name(row[column]) for column, to_name in names.items()},
            }
            for row in split.remove_columns("image")
        }
        for split_name, split in splits.items()
    }


@pytest.fixture(scope="module")
def synthetic_source(tmp_path_factory) -> tuple[list[dict], dict[str, Path]]:
    from hf_skin.synthetic import make_synthetic_ham10000

    ham_dir = make_synthetic_ham10000(
        tmp_path_factory.mktemp("synthetic"), num_lesions=28, seed=1, image_size=(32, 24), with_masks=False
    )
    return read_rows(ham_dir), image_files(ham_dir)


@pytest.fixture(params=["synthetic", "real"])
def source_rows(request, synthetic_source) -> tuple[list[dict], dict[str, Path]]:
    """(metadata rows, image files) of a few whole lesions per class: synthetic (always), real (when present)."""
    if request.param == "synthetic":
        return synthetic_source
    ham_dir = request.getfixturevalue("real_ham_dir")
    return some_lesions(read_rows(ham_dir)), image_files(ham_dir)


@pytest.fixture
def isic_dir(tmp_path, source_rows) -> Path:
    return write_isic_layout(tmp_path / "ISIC2018", *source_rows)


def test_isic_layout_loads_like_the_ham10000_layout(tmp_path, source_rows, caplog):
    rows, files = source_rows
    assert len(rows) >= 30 and len({row["lesion_id"] for row in rows}) < len(rows)  # some lesions have 2+ views
    ham = load_ham10000(write_ham_layout(tmp_path / "HAM10000", rows, files))
    caplog.set_level(logging.INFO, logger="hf_skin.data")
    isic = load_ham10000(write_isic_layout(tmp_path / "ISIC2018", rows, files))

    assert all(split.features == ham10000_features() for split in isic.values())
    got, expected = labelled(isic), labelled(ham)
    # The same split: it depends on the lesions and their dx only, which both layouts give alike.
    assert {name: set(split) for name, split in got.items()} == {name: set(split) for name, split in expected.items()}
    for name in got:
        for image_id, labels in got[name].items():
            want = expected[name][image_id]
            assert {k: labels[k] for k in ("lesion_id", "dx", "dx_type")} == {
                k: want[k] for k in ("lesion_id", "dx", "dx_type")
            }
            assert labels["age"] is None and labels["sex"] == labels["localization"] == "unknown"
    lesions = [{row["lesion_id"] for row in split.values()} for split in got.values()]
    assert not (lesions[0] & lesions[1] or lesions[0] & lesions[2] or lesions[1] & lesions[2])
    assert set().union(*lesions) == {row["lesion_id"] for row in rows}

    example = isic["train"].cast_column("image", ImageFeature(decode=False))[0]
    assert example["image"]["bytes"] == files[example["image_id"]].read_bytes()  # the file's bytes, not re-encoded
    assert "no age, sex or localization" in caplog.text and "multi-input model" in caplog.text
    assert [r.levelname for r in caplog.records if "no age, sex or localization" in r.getMessage()][0] == "WARNING"


def test_nested_files_and_second_load_from_cache(tmp_path, synthetic_source, monkeypatch, caplog):
    root = write_isic_layout(tmp_path / "ISIC2018", *synthetic_source, nested=True)
    first = load_ham10000(root)
    assert sum(map(len, first.values())) == len(synthetic_source[0])

    def no_build(*args, **kwargs):
        raise AssertionError("the unchanged ISIC folder was rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(raw_folder, "build_raw_dataset", no_build)
        caplog.set_level(logging.INFO, logger="hf_skin.data")
        again = load_ham10000(root)
    assert "loaded from cache" in caplog.text
    assert {n: s["image_id"][:] for n, s in again.items()} == {n: s["image_id"][:] for n, s in first.items()}

    # A changed groupings file (a lesion id) is a new build, not the old cache entry.
    groupings = root / "ISIC2018_Task3_Training_LesionGroupings" / ISIC_GROUPINGS
    text = groupings.read_text()
    image, lesion = text.splitlines()[1].split(",")[:2]
    groupings.write_text(text.replace(f"{image},{lesion},", f"{image},HAM_9999999,", 1))
    changed = load_ham10000(root)
    lesion_of = {
        row["image_id"]: row["lesion_id"] for split in changed.values() for row in split.remove_columns("image")
    }
    assert lesion_of[image] == "HAM_9999999"


@pytest.mark.parametrize(
    "values, shown",
    [
        (["1.0", "1.0", "0.0", "0.0", "0.0", "0.0", "0.0"], "MEL=1.0, NV=1.0"),
        (["0.0"] * 7, "MEL=0.0, NV=0.0"),
        (["0.5", "0.5", "0.0", "0.0", "0.0", "0.0", "0.0"], "MEL=0.5"),
        (["1.0", "", "0.0", "0.0", "0.0", "0.0", "0.0"], "NV=(empty)"),
    ],
)
def test_a_row_that_is_not_one_hot_names_its_line(isic_dir, values, shown):
    truth = isic_dir / ISIC_GROUND_TRUTH
    lines = truth.read_text().splitlines()
    image = lines[3].split(",")[0]
    lines[3] = ",".join([image, *values])
    truth.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="not one-hot") as err:
        load_ham10000(isic_dir)
    assert f"{truth}, line 4 (image {image})" in str(err.value) and shown in str(err.value)
    assert "1 such row(s)" in str(err.value)


def test_without_the_groupings_file_it_refuses(isic_dir):
    (isic_dir / ISIC_GROUPINGS).unlink()
    with pytest.raises(FileNotFoundError, match=ISIC_GROUPINGS) as err:
        load_ham10000(isic_dir)
    assert "lesion_id" in str(err.value) and "leak" in str(err.value) and "Download" in str(err.value)


def test_an_image_listed_but_missing_errors_then_skips(isic_dir, source_rows, caplog):
    rows, _ = source_rows
    missing = rows[5]["image_id"]
    (isic_dir / ISIC_IMAGE_FOLDER / f"{missing}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ISIC_GROUND_TRUTH} lists {missing} but no image file") as err:
        load_ham10000(isic_dir)
    assert "on_missing='skip'" in str(err.value)
    caplog.set_level(logging.WARNING, logger="hf_skin.data")
    splits = load_ham10000(isic_dir, on_missing="skip")
    loaded = {image_id for split in splits.values() for image_id in split["image_id"][:]}
    assert loaded == {row["image_id"] for row in rows} - {missing}
    assert f"skipping 1 metadata row(s) whose image is missing ({missing})" in caplog.text


def test_groupings_without_an_image_of_the_ground_truth(isic_dir, source_rows):
    groupings = isic_dir / ISIC_GROUPINGS
    lines = groupings.read_text().splitlines()
    dropped = lines.pop(2).split(",")[0]
    groupings.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"has no row for {dropped}, listed in {ISIC_GROUND_TRUTH}"):
        load_ham10000(isic_dir)


def test_confirm_types_map_to_the_canonical_dx_type(tmp_path, synthetic_source, caplog):
    rows, files = synthetic_source
    root = write_isic_layout(tmp_path / "ISIC2018", rows, files)
    groupings = root / ISIC_GROUPINGS
    lines = groupings.read_text().splitlines()
    odd = lines[1].split(",")[0]
    lines[1] = f"{odd},{lines[1].split(',')[1]},reflectance microscopy"
    groupings.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.WARNING, logger="hf_skin.data")
    splits = load_ham10000(root)
    got = {image_id: row for split in labelled(splits).values() for image_id, row in split.items()}
    assert got[odd]["dx_type"] == "unknown"
    assert all(got[row["image_id"]]["dx_type"] == row["dx_type"] for row in rows if row["image_id"] != odd)
    assert "'reflectance microscopy' (1 row(s))" in caplog.text and "dx_type 'unknown'" in caplog.text


def test_a_folder_with_only_the_ground_truth_is_recognised_as_isic(tmp_path):
    (tmp_path / "ISIC2018_Task3_Training_GroundTruth").mkdir()
    (tmp_path / "ISIC2018_Task3_Training_GroundTruth" / ISIC_GROUND_TRUTH).write_text("image,MEL\n")
    with pytest.raises(FileNotFoundError, match=ISIC_GROUPINGS):
        load_ham10000(tmp_path)
