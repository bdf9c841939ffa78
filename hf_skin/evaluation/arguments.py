"""The arguments of `hf-skin evaluate` (`scripts/evaluate.py`), its default data and where it writes by default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data import DEFAULT_DATASET, SplitArguments
from ..locations import is_hub_id
from ..metrics import BOOTSTRAP_RESAMPLES
from ..runs import RunFolder
from .split import SPLIT_CHOICES


@dataclass(kw_only=True)
class EvaluationArguments(SplitArguments):
    """Arguments of `scripts/evaluate.py` (and of `run_evaluation`). The split's arguments default to the run's own
    when `model` is a run folder (see `run_split`)."""

    model: str = field(metadata={"help": "A checkpoint folder (e.g. runs/cnn) or a Hub model id."})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "A HAM10000 raw download folder, a parquet/save_to_disk folder, or a Hub dataset id (default: "
            f"the data a run folder trained on; for any other checkpoint {DEFAULT_DATASET})."
        },
    )
    split: str = field(
        default="test",
        metadata={
            "help": "Split to evaluate: of a run folder, the run's own lesion-grouped split (checked to hold none of "
            "its training lesions); 'all' evaluates every row, for data the model has never seen.",
            "choices": list(SPLIT_CHOICES),
        },
    )
    tta: bool = field(
        default=False, metadata={"help": "Test-time augmentation: average over the 8 flips/rotations of each image."}
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where to write the report (default <model>/evaluation/<dataset>-<split>[-tta])."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows (debugging)."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ... (default: cuda when available)."})
    bootstrap_resamples: int = field(
        default=BOOTSTRAP_RESAMPLES,
        metadata={
            # No percent sign: argparse %-formats help strings.
            "help": "Bootstrap resamples of the split's lesions behind the 95-percent intervals of the headline "
            "metrics (0: no intervals)."
        },
    )
    bootstrap_seed: int = field(
        default=0, metadata={"help": "Seed of the bootstrap: the same seed, the same intervals."}
    )

    def __post_init__(self):
        if self.split not in SPLIT_CHOICES:
            raise ValueError(f"--split {self.split!r} is not one of {', '.join(SPLIT_CHOICES)}")
        if not Path(self.model).expanduser().is_dir() and not is_hub_id(self.model):
            raise FileNotFoundError(
                f"--model {self.model}: no such checkpoint folder, and not a Hub model id (user/name); pass the "
                "--output_dir of a scripts/finetune.py run or a saved checkpoint"
            )
        if self.dataset is None:
            self.dataset = run_dataset(self.model) or DEFAULT_DATASET
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, not {self.batch_size}")
        if self.bootstrap_resamples < 0:
            raise ValueError(f"--bootstrap_resamples must be 0 (no intervals) or more, not {self.bootstrap_resamples}")
        if self.output_dir is None:
            self.output_dir = os.fspath(default_output_dir(self.model, self.dataset, self.split, self.tta))


def run_dataset(model: str | os.PathLike) -> str | None:
    """The data a run folder trained on (its `run_args.json`), `None` for a Hub id or a bare checkpoint.

    The default data of `hf-skin evaluate` and `hf-skin calibrate`. A local folder that is no longer where the run
    recorded it is a `FileNotFoundError` that says to pass `--dataset`.
    """
    folder = RunFolder(model)
    if not (folder.path.is_dir() and folder.is_run()):
        return None
    dataset = (folder.args or {}).get("dataset")
    if dataset and not is_hub_id(dataset) and not Path(dataset).expanduser().exists():
        raise FileNotFoundError(
            f"{model} trained on {dataset} (its run_args.json), which is not there any more: pass --dataset with "
            "where that data is now"
        )
    return dataset


def default_output_dir(model: str, dataset: str, split: str, tta: bool = False) -> Path:
    """`<model>/evaluation/<dataset name>-<split>[-tta]` for a local checkpoint, `runs/evaluation/...` for a Hub id."""
    name = f"{Path(os.fspath(dataset).rstrip('/')).name or 'dataset'}-{split}{'-tta' if tta else ''}"
    root = Path(model) / "evaluation" if Path(model).is_dir() else Path("runs/evaluation") / model.replace("/", "--")
    return root / name
