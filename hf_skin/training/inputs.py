"""What a model reads during training: the splits (checked, reduced to the model's columns, small training images
downsized once) and the on-the-fly transforms, augmented for the train split."""

from __future__ import annotations

import io

import datasets
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from PIL import Image

from ..data import load_ham10000, verify_images
from ..processing import load_image, make_batch_transform
from .arguments import DataArguments


def build_augmentation(name: str):
    """Train-time augmentation of a PIL image, with torchvision transforms v2.

    `paper` is the study's list: rotation, width/height shifts, shear, zoom, horizontal and vertical flips,
    brightness, with "nearest" fill (edge pixels extended, as Keras does, rather than black corners). Dermoscopy has
    no "up", so full rotations and vertical flips keep the label. `strong` adds wider zoom and colour jitter.
    """
    if name == "none":
        return None
    strong = name == "strong"
    affine = T.RandomAffine(degrees=180, translate=(0.1, 0.1), shear=10, scale=(0.8, 1.25) if strong else (0.9, 1.1))
    pixels = T.Compose(
        [
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.ColorJitter(brightness=0.3, contrast=0.2, saturation=0.2, hue=0.03) if strong else T.ColorJitter(0.2),
        ]
    )

    def augment(image: Image.Image) -> Image.Image:
        width, height = image.size
        pad = max(width, height) // 2  # enough that a rotated, shifted view never reaches the padding's edge
        image = TF.center_crop(affine(TF.pad(image, [pad], padding_mode="edge")), [height, width])
        return pixels(image)

    return augment


def load_splits(data_args: DataArguments, columns: list[str]) -> datasets.DatasetDict:
    """HAM10000 with lesion-grouped splits, reduced to `columns` (image, dx, lesion_id, the metadata a model reads)."""
    splits = load_ham10000(data_args.dataset, **data_args.load_kwargs())
    prepared = datasets.DatasetDict()
    for name, split in splits.items():
        limit = data_args.max_train_samples if name == "train" else data_args.max_eval_samples
        if limit is not None:  # a seeded random subset: the split is in the metadata file's (diagnosis-sorted) order
            split = split.shuffle(seed=data_args.split_seed).select(range(min(limit, len(split))))
        # Every image decoded once now: one damaged mid-file would otherwise stop training mid-epoch.
        split = verify_images(split, f"{data_args.dataset} ({name} split)", data_args.on_missing)
        # Decoding ourselves lets JPEGs decode at reduced size (see processing.load_image).
        prepared[name] = split.select_columns(columns)  # verify_images left the image undecoded (its bytes)
    return prepared


def shrink_images(splits: datasets.DatasetDict, side: int) -> datasets.DatasetDict:
    """Decodes every training image once at reduced size (shorter side `side`, kept as PNG) for small-input models.

    `datasets` caches the result beside the dataset's own cache, so later epochs and runs decode a few kilobytes
    per image instead of a full JPEG; augmentation then works on the small image. Only the train split: validation
    and test keep their images as they are, so that the checkpoint's choice, its calibration and its stored metrics
    are measured on the pixels that serving (`SkinClassifier`, `scripts/evaluate.py`, the Space, the export) sees.
    """

    def shrink(batch: dict[str, list]) -> dict[str, list]:
        images = []
        for value in batch["image"]:
            image = load_image(value, target_size=side)
            scale = side / min(image.size)
            if scale < 1:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        return {"image": images}

    return datasets.DatasetDict(
        {
            name: split.map(shrink, batched=True, batch_size=256, desc=f"Downsizing {name} images to {side} px once")
            if name == "train"
            else split
            for name, split in splits.items()
        }
    )


def attach_transforms(splits: datasets.DatasetDict, processor, augment_name: str = "none") -> None:
    """Sets each split's on-the-fly transform to model inputs; the train split's is augmented."""
    augment = build_augmentation(augment_name)
    features = splits["train"].features
    category_names = {name: f.names for name, f in features.items() if isinstance(f, datasets.ClassLabel)}
    for name, split in splits.items():
        split.set_transform(make_batch_transform(processor, augment if name == "train" else None, category_names))
