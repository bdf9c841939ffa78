"""Lesion-grouped splits: whole lesions, not images, go to train / validation / test (stratified by diagnosis), the
split's arguments as every script takes them (`SplitArguments`), and the one answer to "which lesions are in
more than one split" (`shared_lesions`)."""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict
from sklearn.model_selection import train_test_split

from .schema import SPLITS, column_values, label_words

logger = logging.getLogger(__name__)


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
    check_split_sizes(test_size, validation_size)
    lesion_ids = column_values(dataset, "lesion_id")
    dx = label_words(dataset, "dx")

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


def shared_lesions(splits: Mapping[str, Dataset | Iterable[str]]) -> set[str]:
    """The lesions found in more than one of `splits`: their images would leak from one split into another.

    Args:
        splits (`Mapping[str, Dataset | Iterable[str]]`):
            Split name -> the split, as a `Dataset` with a `lesion_id` column or as its lesion ids (e.g. the lesions
            a run trained on, from its `split.json`).

    Returns:
        `set[str]`: the shared lesion ids; empty when the splits are lesion-grouped.
    """
    owner: dict[str, str] = {}
    shared = set()
    for name, split in splits.items():
        lesions = column_values(split, "lesion_id") if isinstance(split, Dataset) else split
        for lesion in set(lesions):
            if owner.setdefault(lesion, name) != name:
                shared.add(lesion)
    return shared


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


def check_split_sizes(test_size: float, validation_size: float) -> None:
    """Refuses split fractions that are not each in (0, 1), or that leave no lesion for training."""
    if not (0 < test_size < 1 and 0 < validation_size < 1 and test_size + validation_size < 1):
        raise ValueError(
            f"test_size ({test_size}) and validation_size ({validation_size}) must each be in (0, 1) and sum to less "
            "than 1: they are fractions of the lesions"
        )


def check_on_missing(on_missing: str) -> None:
    """Refuses an `on_missing` other than `"error"` or `"skip"`."""
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', not {on_missing!r}")


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
        check_split_sizes(self.test_size, self.validation_size)
        check_on_missing(self.on_missing)

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
