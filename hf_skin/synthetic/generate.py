"""A synthetic HAM10000 folder in the public download's raw layout: learnable fake lesions for the demo and tests."""

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data.provenance import SYNTHETIC_MARKER
from ..labels import DX_LABELS, DX_TYPE_LABELS, LOCALIZATION_LABELS, METADATA_COLUMNS, SEX_LABELS

# Full-dataset class counts (of 10,015 images), used as the per-lesion class prior.
CLASS_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
# Ids that no real image or lesion has (HAM10000's are ISIC_00xxxxx and HAM_00xxxxx), so that a demo model can be
# scored on real data without its synthetic lesions being taken for the real ones it would then have "trained on".
IMAGE_PREFIX = "SYN_IMG_"
LESION_PREFIX = "SYN_LES_"
FIRST_IMAGE_NUMBER = 1
MIN_LESIONS_PER_CLASS = 2  # so that even a tiny fixture can be split by lesion with every class on both sides
MISSING_AGE_RATE = 0.005  # 49 of the 8,584 real rows have no age

# Per-class metadata, from the real per-lesion statistics: age (mean, sd), P(male, female, unknown), P(dx_type),
# relative frequency of body sites, P(1, 2, 3, 4 images of the lesion).
_META = {
    "akiec": ((66, 12), (0.63, 0.37, 0), {"histo": 1}, {"face": 35, "lower extremity": 19, "upper extremity": 18,
              "back": 11, "neck": 4, "chest": 4, "scalp": 4, "hand": 3, "ear": 2}, (0.4, 0.4, 0.17, 0.03)),
    "bcc": ((67, 13), (0.61, 0.39, 0), {"histo": 1}, {"back": 40, "face": 18, "chest": 10, "upper extremity": 10,
            "lower extremity": 9, "scalp": 4, "neck": 4, "abdomen": 2, "ear": 1}, (0.4, 0.4, 0.17, 0.03)),
    "bkl": ((64, 14), (0.56, 0.43, 0.01), {"histo": 0.68, "consensus": 0.28, "confocal": 0.04}, {"face": 26,
            "back": 18, "lower extremity": 15, "upper extremity": 9, "trunk": 8, "chest": 7, "abdomen": 5,
            "scalp": 4, "neck": 3, "unknown": 3, "hand": 2}, (0.4, 0.4, 0.17, 0.03)),
    "df": ((52, 13), (0.5, 0.5, 0), {"consensus": 0.6, "histo": 0.4}, {"lower extremity": 73, "upper extremity": 21,
           "abdomen": 3, "back": 2, "genital": 1}, (0.4, 0.4, 0.17, 0.03)),
    "mel": ((61, 15), (0.6, 0.4, 0), {"histo": 1}, {"back": 31, "lower extremity": 17, "upper extremity": 17,
            "face": 11, "chest": 5, "abdomen": 5, "trunk": 4, "foot": 3, "neck": 3, "ear": 2, "scalp": 1,
            "unknown": 1}, (0.4, 0.4, 0.17, 0.03)),
    "nv": ((47, 14), (0.51, 0.48, 0.01), {"follow_up": 0.68, "histo": 0.25, "consensus": 0.07}, {"lower extremity": 22,
           "trunk": 21, "back": 20, "abdomen": 13, "upper extremity": 10, "foot": 4, "unknown": 3, "chest": 2,
           "face": 1, "neck": 1, "genital": 1, "hand": 1, "scalp": 0.5, "ear": 0.4, "acral": 0.05},
           (0.8, 0.13, 0.06, 0.01)),
    "vasc": ((54, 18), (0.47, 0.53, 0), {"consensus": 0.66, "histo": 0.34}, {"abdomen": 27, "trunk": 27,
             "lower extremity": 14, "back": 11, "upper extremity": 6, "face": 5, "chest": 4, "hand": 4, "neck": 2},
             (0.4, 0.4, 0.17, 0.03)),
}  # fmt: skip

# Per-class look: main and blotch colours (RGB), radius as a fraction of the image height, border irregularity,
# edge softness, fine texture, blotchiness and the class's signature (pale centre, vessels, scales, comedos, lacunae).
# Ranges overlap on purpose (dark nevi vs. melanoma, tan nevi vs. keratoses) so the task is not trivial.
_LOOK = {
    "akiec": dict(color=(200, 115, 112), color2=(175, 105, 105), radius=0.36, irregular=0.10, soft=0.12, texture=0.06,
                  blotch=0.5, scales=0.8),
    "bcc": dict(color=(205, 140, 150), color2=(125, 120, 150), radius=0.31, irregular=0.08, soft=0.08, texture=0.04,
                blotch=0.5, vessels=0.8, scales=0.3),
    "bkl": dict(color=(165, 116, 100), color2=(125, 86, 82), radius=0.34, irregular=0.08, soft=0.05, texture=0.08,
                blotch=0.6, comedo=0.6),
    "df": dict(color=(170, 110, 108), color2=(145, 95, 95), radius=0.28, irregular=0.04, soft=0.15, texture=0.03,
               blotch=0.3, pale=0.7),
    "mel": dict(color=(115, 72, 65), color2=(108, 102, 116), radius=0.35, irregular=0.2, soft=0.06, texture=0.08,
                blotch=0.6, dark=0.8),
    "nv": dict(color=(155, 95, 85), color2=(120, 72, 68), radius=0.27, irregular=0.04, soft=0.08, texture=0.04,
               blotch=0.35),
    "vasc": dict(color=(185, 60, 95), color2=(120, 40, 80), radius=0.24, irregular=0.05, soft=0.04, texture=0.04,
                 blotch=0.3, lacunae=0.8),
}  # fmt: skip
_SKIN_TONES = np.array([(200, 155, 160), (215, 165, 165), (190, 150, 150), (225, 180, 175), (205, 165, 150)])
_HARMONICS = 12  # border harmonics 2..12: low ones make ovals and lobes, high ones a ragged edge
_EXTENT = 220.0  # half-width (pixels) of the lesion-frame square the noise grids cover: half-diagonal, stretched
# Value noise (wavelength in pixels, samples): blotches, vessels/lagoons, fine texture, keratin flakes, skin tone.
_NOISE = {"low": (22.0, 2), "mid": (9.0, 2), "high": (3.5, 1), "flakes": (2.5, 1), "skin": (35.0, 2)}


def _noise(grid: np.ndarray, wavelength: float, turns: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Value noise: random grid values smoothly interpolated at lesion coordinates, so every view sees the same.

    With `turns=2` a second sample, turned by ~53 degrees, is added so that thresholded blobs are not box-shaped.
    """
    total, n = 0, grid.shape[1]
    for gu, gv in ((u, v), (0.6 * u - 0.8 * v, 0.8 * u + 0.6 * v))[:turns]:
        gx = np.clip((gu + _EXTENT) / wavelength, 0, n - 1.001)
        gy = np.clip((gv + _EXTENT) / wavelength, 0, n - 1.001)
        ix, iy = np.floor(gx), np.floor(gy)
        fx, fy = gx - ix, gy - iy
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smoothstep hides the grid
        corner = (iy * n + ix).astype(np.int32)  # flat indices: take() is the fastest gather
        corners = [grid.ravel().take(corner + offset) for offset in (0, 1, n, n + 1)]
        total = (
            total
            + (corners[0] * (1 - fx) + corners[1] * fx) * (1 - fy)
            + (corners[2] * (1 - fx) + corners[3] * fx) * fy
        )
    return total * (1.6 / turns**0.5)  # about unit variance


def _lesion(rng: np.random.Generator, dx: str, width: int, height: int) -> dict:
    """Everything that stays fixed across the images of one lesion."""
    look, shade = _LOOK[dx], math.exp(rng.normal(0, 0.15))  # a global shade makes light and dark variants of a class
    k = np.arange(2, _HARMONICS + 1)
    return dict(
        look=look,
        skin=(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] * np.exp(rng.normal(0, 0.05, 3))).astype(np.float32),
        color=(np.array(look["color"]) * shade * np.exp(rng.normal(0, 0.05, 3))).astype(np.float32),
        color2=(np.array(look["color2"]) * shade * np.exp(rng.normal(0, 0.04, 3))).astype(np.float32),
        center=np.array([width, height]) * (0.5 + rng.normal(0, 0.06, 2)),
        radius=look["radius"] * height * math.exp(rng.normal(0, 0.22)),
        aspect=math.exp(rng.normal(0, 0.15)),
        # Complex border coefficients c_k: radius(phi) = R * (1 + Re sum_k c_k e^{ik phi}), amplitudes falling with k.
        border=(
            look["irregular"] * rng.uniform(0.4, 1.4) * (np.array([1, 1j]) @ rng.normal(size=(2, k.size))) / k**1.2
        ).astype(np.complex64),
        strength=rng.uniform(0.4, 1.0),  # how strongly this lesion shows its class signature
        noise={
            name: rng.normal(size=(int(2 * _EXTENT / wl) + 2,) * 2).astype(np.float32)
            for name, (wl, _) in _NOISE.items()
        },
        hairs=rng.uniform(
            [0, -70, -0.004, 0.4], [math.pi, 70, 0.004, 1.1], (rng.poisson(3) * (rng.random() < 0.3), 4)
        ),
        vignette=rng.uniform(0.45, 0.6) * width if rng.random() < 0.3 else None,  # the dermatoscope's dark circle
    )


def _render(p: dict, rng: np.random.Generator, width: int, height: int, first: bool) -> tuple[np.ndarray, np.ndarray]:
    """One view of lesion `p` (slightly rotated, shifted, zoomed and lit): uint8 RGB (H, W, 3) and bool mask (H, W)."""
    look, strength = p["look"], p["strength"]
    # The first view is the reference; later ones are re-takes of the same lesion.
    rotation, shift, zoom, light = 0.0, np.zeros(2), 1.0, 1.0
    if not first:
        rotation, shift, (zoom, light) = rng.uniform(-0.4, 0.4), rng.normal(0, 5, 2), np.exp(rng.normal(0, 0.06, 2))
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = cols - p["center"][0] - shift[0], rows - p["center"][1] - shift[1]
    u = (math.cos(rotation) * x + math.sin(rotation) * y) / zoom
    v = (-math.sin(rotation) * x + math.cos(rotation) * y) / zoom * p["aspect"]
    r = np.sqrt(u * u + v * v) + 1e-3
    z, wobble = (u + 1j * v) / r, 0  # e^{i phi}; Horner's rule gives sum_k c_k z^k without any trigonometry
    for c in p["border"][::-1]:
        wobble = (wobble + c) * z
    rho = r / (p["radius"] * np.clip(1 + (wobble * z).real, 0.4, None))  # < 1 inside the lesion

    # Lesion colours are only needed in the box where the lesion shows (beyond 1 + 5 * soft its weight is < 1%).
    near = rho < 1 + 5 * look["soft"]
    ys, xs = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
    box = np.s_[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] if ys.size else np.s_[0:0, 0:0]
    fields = {}

    def noise(name: str) -> np.ndarray:
        if name not in fields:
            fields[name] = _noise(p["noise"][name], *_NOISE[name], u[box], v[box])
        return fields[name]

    def blend(image: np.ndarray, color: np.ndarray, weight: np.ndarray) -> np.ndarray:
        weight = np.clip(weight, 0, 1)[..., None]
        return image + (np.asarray(color, np.float32) - image) * weight

    lesion = p["color"] * (1 + look["texture"] * (noise("high") + 0.5 * noise("mid")))[..., None]
    lesion = blend(lesion, p["color2"], look["blotch"] * (noise("low") - 0.3))
    if "pale" in look:  # dermatofibroma: white scar-like centre
        lesion = blend(lesion, np.array([235, 215, 200]), look["pale"] * strength * np.exp(-4 * rho[box] ** 2))
    if "vessels" in look:  # basal cell carcinoma: thin red branching vessels where a field crosses zero
        lesion = blend(
            lesion, np.array([175, 30, 45]), look["vessels"] * strength * np.exp(-(noise("mid") ** 2) / 0.02)
        )
    if "scales" in look:  # actinic keratosis (and some bcc): white keratin flakes
        lesion = blend(lesion, np.array([240, 230, 215]), look["scales"] * strength * (noise("flakes") - 1.0))
    if "comedo" in look:  # seborrhoeic keratosis: dark comedo-like plugs
        lesion = blend(lesion, p["color2"] * 0.6, look["comedo"] * strength * (noise("flakes") - 1.0))
    if "dark" in look:  # melanoma: black areas beside the blue-grey ones, so several colours in one lesion
        lesion = blend(lesion, np.array([45, 30, 30]), look["dark"] * strength * (-noise("low") - 0.6))
    if "lacunae" in look:  # vascular lesion: dark red-purple lagoons
        lesion = blend(lesion, p["color2"] * 0.8, look["lacunae"] * strength * (noise("mid") - 0.2))

    image = p["skin"] * (1 + 0.03 * _noise(p["noise"]["skin"], *_NOISE["skin"], u, v))[..., None]
    image[box] = blend(image[box], lesion, 1 / (1 + np.exp((rho[box] - 1) / look["soft"])))
    for angle, offset, bend, thickness in p["hairs"]:  # dark, slightly curved lines over everything
        along, across = u * math.cos(angle) + v * math.sin(angle), -u * math.sin(angle) + v * math.cos(angle)
        image = blend(image, np.array([60, 45, 40]), 0.8 * (thickness - np.abs(across - offset - bend * along**2)))
    if p["vignette"] is not None:
        image = blend(image, np.zeros(3), 0.9 * (np.hypot(cols - width / 2, rows - height / 2) - p["vignette"]) / 8)
    image = image * light + 4 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), rho < 1


def _class_counts(num_lesions: int) -> dict[str, int]:
    """Lesions per class: the minimum for every class, the rest by the HAM10000 prior (largest remainder)."""
    minimum = MIN_LESIONS_PER_CLASS * len(DX_LABELS)
    if num_lesions < minimum:
        raise ValueError(f"num_lesions={num_lesions} is too small: pass at least {minimum} (2 lesions per class)")
    prior = np.array([CLASS_COUNTS[dx] for dx in DX_LABELS]) / sum(CLASS_COUNTS.values())
    share = (num_lesions - minimum) * prior
    counts = MIN_LESIONS_PER_CLASS + np.floor(share).astype(int)
    counts[np.argsort(np.floor(share) - share, kind="stable")[: num_lesions - counts.sum()]] += 1
    return dict(zip(DX_LABELS, counts.tolist()))


def make_synthetic_ham10000(
    out_dir: str | Path,
    num_lesions: int = 600,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    with_masks: bool = True,
) -> Path:
    """
    Writes a synthetic HAM10000 folder laid out exactly like the public download (metadata CSV, JPEGs in two `part`
    folders, optional `_segmentation.png` masks), with class-dependent lesion looks and metadata.

    Args:
        out_dir (`str` or `Path`):
            Folder to write into; created if needed. Files already there are overwritten (files of an earlier, larger
            run that the new CSV does not list stay, unused).
        num_lesions (`int`, *optional*, defaults to 600):
            Number of lesions; each has 1-4 images (nevi mostly 1). At least 2 lesions of every class, so at least 14.
        seed (`int`, *optional*, defaults to 0):
            The same seed writes byte-identical files.
        image_size (`tuple[int, int]`, *optional*, defaults to `(200, 150)`):
            (width, height) of every image and mask, like the downsampled download.
        with_masks (`bool`, *optional*, defaults to `True`):
            Whether to write `HAM10000_segmentations_lesion_tschandl/ISIC_xxxxxxx_segmentation.png` (L mode, 0/255).

    Returns:
        `Path`: `out_dir`.
    """
    out_dir, (width, height) = Path(out_dir), image_size
    rng = np.random.default_rng(seed)
    dxs = rng.permutation([dx for dx, n in _class_counts(num_lesions).items() for _ in range(n)])
    no_age = set(rng.choice(num_lesions, max(1, round(MISSING_AGE_RATE * num_lesions)), replace=False).tolist())
    lesions = []
    for i, dx in enumerate(dxs):
        (age_mean, age_sd), sex_p, dx_type_p, loc_p, views_p = _META[dx]
        age = "" if i in no_age else f"{np.clip(5 * round(rng.normal(age_mean, age_sd) / 5), 5, 85):.1f}"
        sex = rng.choice(SEX_LABELS, p=sex_p)
        dx_type = rng.choice(list(dx_type_p), p=np.array(list(dx_type_p.values())) / sum(dx_type_p.values()))
        loc = rng.choice(list(loc_p), p=np.array(list(loc_p.values())) / sum(loc_p.values()))
        lesions.append(
            (f"{LESION_PREFIX}{i:07d}", str(dx), str(dx_type), age, str(sex), str(loc), 1 + rng.choice(4, p=views_p))
        )
    assert all(
        les[2] in DX_TYPE_LABELS and les[5] in LOCALIZATION_LABELS for les in lesions
    )  # the loader's vocabulary
    # Image ids are consecutive but shuffled over lesions, as in the download, so id order reveals nothing.
    num_images = sum(les[-1] for les in lesions)
    numbers = iter(FIRST_IMAGE_NUMBER + rng.permutation(num_images))
    part_1_end = FIRST_IMAGE_NUMBER + (num_images + 1) // 2

    parts, masks = (
        [out_dir / f"HAM10000_images_part_{i}" for i in (1, 2)],
        out_dir / "HAM10000_segmentations_lesion_tschandl",
    )
    for folder in parts + [masks] * with_masks:
        folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (lesion_id, dx, *meta, num_views) in enumerate(tqdm(lesions, desc="Drawing synthetic lesions")):
        lesion_rng = np.random.default_rng([seed, i])  # per lesion, so a lesion does not depend on the ones before
        params = _lesion(lesion_rng, dx, width, height)
        for view in range(num_views):
            number = int(next(numbers))
            image_id = f"{IMAGE_PREFIX}{number:07d}"
            image, mask = _render(params, lesion_rng, width, height, first=view == 0)
            Image.fromarray(image).save(parts[number >= part_1_end] / f"{image_id}.jpg", quality=90)
            if with_masks:
                Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{image_id}_segmentation.png")
            rows.append([lesion_id, image_id, dx, *meta])
    with open(out_dir / "HAM10000_metadata.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([METADATA_COLUMNS, *rows])
    # What this folder is, for every model that learns from it (`hf_skin.data.describe_data`): not real lesions.
    # Written last: a folder holding it is complete (`make demo` remakes one without it).
    marker = {"generator": "hf_skin.synthetic", "seed": seed, "num_lesions": num_lesions, "real_lesions": False}
    (out_dir / SYNTHETIC_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir
