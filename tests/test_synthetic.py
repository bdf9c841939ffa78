"""The synthetic folder must be indistinguishable from the real download's layout, and its labels must be learnable."""

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_skin.cli import synthetic as main
from hf_skin.data import DX_LABELS, DX_TYPE_LABELS, LOCALIZATION_LABELS, METADATA_COLUMNS, SEX_LABELS
from hf_skin.synthetic import CLASS_COUNTS, FIRST_IMAGE_NUMBER, IMAGE_PREFIX, LESION_PREFIX, make_synthetic_ham10000

PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
MASKS = "HAM10000_segmentations_lesion_tschandl"


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "HAM10000_metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def by_lesion(rows: list[dict]) -> dict[str, list[dict]]:
    lesions = defaultdict(list)
    for row in rows:
        lesions[row["lesion_id"]].append(row)
    return lesions


def folder_bytes(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob(pattern)) if p.is_file()}


def image_and_mask(folder: Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """float (H, W, 3) pixels and bool (H, W) lesion mask of one image, wherever the image lies."""
    (path,) = folder.glob(f"HAM10000_images_part_*/{image_id}.jpg")
    with Image.open(path) as image, Image.open(folder / MASKS / f"{image_id}_segmentation.png") as mask:
        return np.asarray(image, dtype=np.float32), np.asarray(mask) > 0


@pytest.fixture(scope="module")
def large_tiny_images(tmp_path_factory) -> Path:
    """600 lesions for class statistics; metadata does not depend on image size, so the images are tiny and fast."""
    return make_synthetic_ham10000(tmp_path_factory.mktemp("large"), seed=0, image_size=(24, 18), with_masks=False)


def test_csv_columns_ids_and_vocabularies(synthetic_dir):
    with open(synthetic_dir / "HAM10000_metadata.csv") as f:
        assert f.readline() == ",".join(METADATA_COLUMNS) + "\n"
    rows = read_rows(synthetic_dir)
    assert all(
        re.fullmatch(r"SYN_LES_\d{7}", r["lesion_id"]) and re.fullmatch(r"SYN_IMG_\d{7}", r["image_id"]) for r in rows
    )
    numbers = sorted(int(r["image_id"][len(IMAGE_PREFIX) :]) for r in rows)
    assert numbers == list(range(FIRST_IMAGE_NUMBER, FIRST_IMAGE_NUMBER + len(rows)))  # consecutive and unique
    assert {r["dx"] for r in rows} == set(DX_LABELS)  # every class, even in the small fixture
    assert {r["dx_type"] for r in rows} <= set(DX_TYPE_LABELS)
    assert {r["sex"] for r in rows} <= set(SEX_LABELS)
    assert {r["localization"] for r in rows} <= set(LOCALIZATION_LABELS)


def test_several_images_per_lesion_sharing_label_and_metadata(synthetic_dir):
    lesions = by_lesion(read_rows(synthetic_dir))
    assert len(lesions) == 150
    sizes = Counter(len(images) for images in lesions.values())
    assert sizes[1] > 0 and sum(n for size, n in sizes.items() if size >= 2) >= 20 and max(sizes) <= 4
    for images in lesions.values():
        assert len({tuple(r[c] for c in METADATA_COLUMNS if c != "image_id") for r in images}) == 1
    # nevi are mostly photographed once, the other classes often several times (HAM10000: 10,015 images, 7,470 lesions)
    mean_images = {dx: np.mean([len(i) for i in lesions.values() if i[0]["dx"] == dx]) for dx in ("nv", "mel", "bkl")}
    assert mean_images["nv"] < mean_images["mel"] and mean_images["nv"] < mean_images["bkl"]


def test_image_and_mask_files(synthetic_dir):
    rows = read_rows(synthetic_dir)
    half = FIRST_IMAGE_NUMBER + (len(rows) + 1) // 2
    for row in rows:
        part = PARTS[
            int(row["image_id"][len(IMAGE_PREFIX) :]) >= half
        ]  # the first half of the ids in part_1, like the download
        with Image.open(synthetic_dir / part / f"{row['image_id']}.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (200, 150))
            pixels = np.asarray(image, dtype=np.float32)
        with Image.open(synthetic_dir / MASKS / f"{row['image_id']}_segmentation.png") as mask:
            assert (mask.mode, mask.size) == ("L", (200, 150))
            lesion = np.asarray(mask)
        assert set(np.unique(lesion)) == {0, 255}
        # The mask marks the lesion: its pixels differ in colour from the skin around it.
        assert np.abs(pixels[lesion > 0].mean(0) - pixels[lesion == 0].mean(0)).sum() > 15
    listed = {f"{r['image_id']}.jpg" for r in rows}
    assert {p.name for part in PARTS for p in (synthetic_dir / part).iterdir()} == listed


def test_views_of_a_lesion_differ_slightly(synthetic_dir):
    for images in by_lesion(read_rows(synthetic_dir)).values():
        if len(images) > 1:
            (first, first_mask), (second, second_mask) = (
                image_and_mask(synthetic_dir, r["image_id"]) for r in images[:2]
            )
            assert (first_mask != second_mask).any()  # moved, turned or zoomed
            assert 0.5 < first_mask.sum() / second_mask.sum() < 2  # but the same lesion
            hues = [
                pixels[mask].mean(0) / pixels[mask].mean()
                for pixels, mask in ((first, first_mask), (second, second_mask))
            ]
            assert np.abs(hues[0] - hues[1]).max() < 0.05  # in the same colours, whatever the lighting


def test_appearance_depends_on_class(synthetic_dir):
    colour = defaultdict(list)
    for row in read_rows(synthetic_dir):
        pixels, lesion = image_and_mask(synthetic_dir, row["image_id"])
        colour[row["dx"]].append(pixels[lesion].mean(0))
    mean = {dx: np.mean(c, axis=0) for dx, c in colour.items()}
    assert mean["mel"].sum() < min(mean[dx].sum() for dx in DX_LABELS if dx != "mel")  # melanoma is the darkest
    redness = {dx: m[0] - m[1] for dx, m in mean.items()}
    assert max(redness, key=redness.get) == "vasc"


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    kwargs = dict(num_lesions=14, image_size=(100, 75))
    first = make_synthetic_ham10000(tmp_path / "a", seed=1, **kwargs)
    second = make_synthetic_ham10000(tmp_path / "b", seed=1, **kwargs)
    other = make_synthetic_ham10000(tmp_path / "c", seed=2, **kwargs)
    assert folder_bytes(first) == folder_bytes(second)
    assert (first / "HAM10000_metadata.csv").read_bytes() != (other / "HAM10000_metadata.csv").read_bytes()
    assert set(folder_bytes(first, "*.jpg").values()).isdisjoint(folder_bytes(other, "*.jpg").values())
    # Writing again over an existing folder reproduces it.
    make_synthetic_ham10000(first, seed=1, **kwargs)
    assert folder_bytes(first) == folder_bytes(second)


def test_ages_missing_not_zero(synthetic_dir):
    ages = [r["age"] for r in read_rows(synthetic_dir)]
    assert "" in ages  # a few missing, as in the download (49 of 8,584 rows)
    known = [float(a) for a in ages if a]
    assert len(known) > 0.9 * len(ages) and min(known) > 0 and all(a % 5 == 0 for a in known)


def test_class_prior_and_minimum(tmp_path, large_tiny_images):
    lesions = Counter(i[0]["dx"] for i in by_lesion(read_rows(large_tiny_images)).values())
    assert sum(lesions.values()) == 600
    for dx in DX_LABELS:
        assert lesions[dx] == pytest.approx(2 + (600 - 14) * CLASS_COUNTS[dx] / 10015, abs=1)  # 2 each, then the prior
    tiny = make_synthetic_ham10000(tmp_path, num_lesions=14, image_size=(24, 18), with_masks=False)
    assert Counter(i[0]["dx"] for i in by_lesion(read_rows(tiny)).values()) == dict.fromkeys(DX_LABELS, 2)
    with pytest.raises(ValueError, match="num_lesions=13 is too small"):
        make_synthetic_ham10000(tmp_path / "too_small", num_lesions=13)


def test_metadata_depends_on_class(large_tiny_images):
    lesions = [images[0] for images in by_lesion(read_rows(large_tiny_images)).values()]

    def share(dx: tuple[str, ...], column: str, values: tuple[str, ...]) -> float:
        rows = [r for r in lesions if r["dx"] in dx]
        return np.mean([r[column] in values for r in rows])

    def mean_age(dx: str) -> float:
        return np.mean([float(r["age"]) for r in lesions if r["dx"] == dx and r["age"]])

    assert mean_age("bcc") > mean_age("nv") + 10 and mean_age("akiec") > mean_age("nv") + 10
    assert mean_age("nv") < mean_age("mel") < mean_age("bcc")
    head_and_neck = ("face", "scalp", "ear", "neck")
    assert share(("bcc", "akiec"), "localization", head_and_neck) > 2 * share(("nv",), "localization", head_and_neck)
    assert share(("df",), "localization", ("lower extremity",)) > 0.5
    assert share(("mel", "bcc", "akiec"), "dx_type", ("histo",)) == 1
    assert share(("nv",), "dx_type", ("follow_up",)) > 0.5
    assert share(("bkl", "vasc"), "dx_type", ("consensus",)) > 0.2


def test_command_line(tmp_path, capsys):
    main([str(tmp_path), "--num_lesions", "20", "--seed", "3", "--no_masks"])
    out = capsys.readouterr().out
    rows = read_rows(tmp_path)
    assert f"Wrote {len(rows)} images of 20 lesions" in out and all(dx in out for dx in DX_LABELS)
    assert not (tmp_path / MASKS).exists()


def test_synthetic_ids_cannot_be_real_ones(synthetic_dir, real_ham_dir):
    """A demo model scored on real data: none of its synthetic lesions may pass for a real one (the training-lesion
    guard refused to evaluate the demo on HAM10000, 514 of 600 lesion ids being real ones)."""
    rows = read_rows(synthetic_dir)
    real = read_rows(real_ham_dir)
    assert not {r["image_id"] for r in rows} & {r["image_id"] for r in real}
    assert not {r["lesion_id"] for r in rows} & {r["lesion_id"] for r in real}
    assert all(r["image_id"].startswith(IMAGE_PREFIX) and r["lesion_id"].startswith(LESION_PREFIX) for r in rows)
    assert not any(re.fullmatch(r"(ISIC|HAM)_\d{7}", r[c]) for r in rows for c in ("image_id", "lesion_id"))
