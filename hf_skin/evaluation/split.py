"""Which images an evaluation scores: a run's own lesion-grouped split, guarded against the lesions it trained on, or
every row of data the model never saw (`"all"`).

The run's split itself is `hf_skin.runs.RunFolder`'s (`split_arguments`, `training_lesions`); what lives here is the
guard: arguments that contradict it are refused, and so is a split that holds a lesion the run trained on.
"""

from __future__ import annotations

import logging
import os

import datasets

from ..data import SplitArguments, column_values, load_ham10000, shared_lesions
from ..runs import RunFolder, RunFolderError

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("train", "validation", "test", "all")


def run_split(model: str | os.PathLike, split: str, given: SplitArguments) -> tuple[SplitArguments, RunFolder | None]:
    """The split arguments to evaluate `model` with: a run folder's own, unless `split` is `all`.

    Given arguments that contradict the run's recorded split are refused: that "test" split would hold the run's
    training lesions. Returns the filled arguments and the run folder (`None` for a Hub id or a bare checkpoint).
    """
    folder = RunFolder(model)
    folder = folder if folder.path.is_dir() and folder.is_run() else None
    recorded = folder.split_arguments() if folder is not None else None
    if recorded is not None and split != "all":
        conflicts = {
            name: value for name, value in given.given().items() if name != "on_missing" and value != recorded[name]
        }
        if conflicts:
            asked = ", ".join(f"--{name} {value}" for name, value in conflicts.items())
            made = ", ".join(f"--{name} {recorded[name]}" for name in conflicts)
            raise RunFolderError(
                f"{model} was trained with {made}; its {split} split under {asked} would hold lesions it trained on. "
                "Leave the split arguments out (the run's own split is used), or score data the model never saw "
                "with --split all"
            )
    filled = SplitArguments(**given.split_arguments())
    filled.fill(recorded if split != "all" else None)
    if folder is None:
        logger.info(
            "%s is not a run folder: cannot check that the %s split excludes its training lesions", model, split
        )
    return filled, folder


def check_no_training_lesions(data: datasets.Dataset, folder: RunFolder, split: str, dataset) -> None:
    """Refuses to score a run on lesions it trained on (recorded in its `split.json`), except as `train`."""
    trained = folder.training_lesions()
    if split == "train" or trained is None:
        return
    lesions = set(column_values(data, "lesion_id"))
    seen = sorted(shared_lesions({split: lesions, "train": trained}))
    if seen:
        hint = (
            "this is the data it trained on: evaluate its test (or validation) split instead"
            if split == "all"
            else "the dataset is not the one it was split from, or the split changed"
        )
        raise RunFolderError(
            f"{len(seen)} of the {len(lesions)} lesions of the {split} split of {dataset} are lesions {folder.path} "
            f"trained on (e.g. {', '.join(seen[:3])}): scores on them would be inflated. {hint[0].upper()}{hint[1:]}"
        )


def load_eval_split(
    dataset: str | os.PathLike,
    split: str = "test",
    *,
    test_size: float = 0.15,
    validation_size: float = 0.15,
    seed: int = 42,
    on_missing: str = "error",
    max_samples: int | None = None,
) -> datasets.Dataset:
    """One split of HAM10000-format data, a lesion-grouped split as training made it, or every row (`"all"`)."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLIT_CHOICES)}")
    splits = load_ham10000(
        dataset, test_size=test_size, validation_size=validation_size, seed=seed, on_missing=on_missing
    )
    data = datasets.concatenate_datasets(list(splits.values())) if split == "all" else splits[split]
    if max_samples is not None:
        data = data.select(range(min(max_samples, len(data))))
    if len(data) == 0:
        raise ValueError(f"the {split} split of {dataset} is empty: nothing to evaluate")
    return data
