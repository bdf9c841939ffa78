"""A run folder: what one `scripts/finetune.py` run writes, and the one place that reads it back.

A run folder holds exactly one run. Its files:

- `run_state.json`: `running` from the first write, then `finished` or `failed` (with the error); a folder without
  `finished` is visibly unfinished, and nothing publishes it.
- `run_args.json`: every argument of the run, tokens left out (`scripts/finetune.py run_args.json` runs it again).
- `split.json`: the split the run was made with: its arguments and the lesions each split used (after any
  `--max_*_samples`), so that evaluation uses the run's own split and can prove it scores no training lesion.
- the checkpoint (`config.json`, `model.safetensors`, the processor, the modeling code), metrics
  (`{split}_metrics.json`, `all_results.json`, ...), confusion matrices, `trainer_state.json`, `README.md` (the card).

Training writes it through `RunFolder`; evaluation, comparison and the Hub read it through `RunFolder`.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "run_state.json"
RUN_ARGS_FILE = "run_args.json"
SPLIT_FILE = "split.json"
CARD_FILE = "README.md"
RUNNING, FINISHED, FAILED = "running", "finished", "failed"
# What a push publishes, by name: the checkpoint, its modeling code (for trust_remote_code), the run's record, its
# metrics and figures, the card. Anything else in the folder (notes, checkpoint-*/, the pickled training_args.bin,
# split.json's lesion ids, evaluation/) stays local.
# The checkpoint itself: what `from_pretrained` reads.
CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "preprocessor_config.json",
    "metadata_processor.json",
    "configuration_*.py",
    "modeling_*.py",
)
PUBLISHED_FILES = (
    *CHECKPOINT_FILES,
    STATE_FILE,
    RUN_ARGS_FILE,
    "all_results.json",
    "train_results.json",
    "validation_results.json",
    "test_results.json",
    "validation_metrics.json",
    "test_metrics.json",
    "trainer_state.json",
    "*_confusion_matrix.png",
    "*_confusion_matrix_normalized.png",
    CARD_FILE,
)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked: not a run, unfinished, or already holding another run."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """One run's folder (`--output_dir`): writes a run's record as it goes and reads a finished run back.

    Writing (training, main process only): `check_writable` (every process, before anything is written), `start`,
    `record_split`, then `finish` or `fail`. Reading: `status`, `args`, `split`, `config`, `test_metrics`,
    `validation_metrics`, `all_results`, `trainer_state`, `split_arguments()`, `training_lesions()`,
    `require_finished()` and `published_files()`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({os.fspath(self.path)!r})"

    # ------------------------------------------------------------------------------------------------------------
    # Reading

    def read_json(self, name: str) -> Any:
        """A JSON file of the folder, `None` when absent; a corrupt one is a `RunFolderError` that names it."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFolderError(f"{path} is not valid JSON ({err}): the run folder is damaged") from err

    @property
    def state(self) -> dict | None:
        return self.read_json(STATE_FILE)

    @property
    def status(self) -> str | None:
        """`running`, `finished`, `failed`, or `None` for a folder with no run state.

        Folders of hf-skin before run states were recorded count as `finished` when they hold test metrics.
        """
        state = self.state
        if state is not None:
            return state.get("status")
        if (self.path / "test_metrics.json").is_file() and (self.path / RUN_ARGS_FILE).is_file():
            return FINISHED
        return None

    @cached_property
    def args(self) -> dict | None:
        """`run_args.json`: model, data and training arguments in one flat dict."""
        return self.read_json(RUN_ARGS_FILE)

    @cached_property
    def split(self) -> dict | None:
        """`split.json`: `arguments` (as `SplitArguments.split_arguments()`), `dataset`, `lesions` per split."""
        return self.read_json(SPLIT_FILE)

    @cached_property
    def config(self) -> dict | None:
        return self.read_json("config.json")

    @cached_property
    def test_metrics(self) -> dict | None:
        return self.read_json("test_metrics.json")

    @cached_property
    def validation_metrics(self) -> dict | None:
        return self.read_json("validation_metrics.json")

    @cached_property
    def all_results(self) -> dict | None:
        return self.read_json("all_results.json")

    @cached_property
    def trainer_state(self) -> dict | None:
        return self.read_json("trainer_state.json")

    def is_run(self) -> bool:
        """Whether the folder holds (or held) an hf-skin training run."""
        return (self.path / STATE_FILE).is_file() or (self.path / RUN_ARGS_FILE).is_file()

    def split_arguments(self) -> dict | None:
        """The arguments of the run's lesion-grouped split (`SPLIT_DEFAULTS`' names), `None` when not recorded."""
        from .data import SPLIT_DEFAULTS

        if self.split is not None:
            return dict(self.split["arguments"])
        if self.args is not None:  # runs made before split.json: their arguments hold the split's
            return {name: self.args.get(name, default) for name, default in SPLIT_DEFAULTS.items()}
        return None

    def splits(self, dataset: str | os.PathLike | None = None):
        """The run's lesion-grouped splits (`load_ham10000` with its split arguments) of `dataset`, by default the
        dataset it trained on."""
        from .data import SplitArguments, load_ham10000

        split = SplitArguments(**(self.split_arguments() or {}))
        split.fill()
        return load_ham10000(dataset or (self.args or {})["dataset"], **split.load_kwargs())

    def training_lesions(self) -> set[str] | None:
        """The lesion ids the run trained on, `None` when they cannot be known.

        From `split.json`; for a run made before it, rebuilt from `run_args.json` (its dataset, when that path
        still exists, split with the run's arguments: the whole train split, a superset of what it trained on).
        """
        if self.split is not None:
            return set(self.split["lesions"]["train"])
        source = (self.args or {}).get("dataset")
        if not source or not Path(source).exists():
            return None
        from .data import column_values

        return set(column_values(self.splits(source)["train"], "lesion_id"))

    def require_finished(self) -> RunFolder:
        """Checks that the folder holds one finished run (saved model, test metrics) and returns it."""
        hint = "pass the --output_dir of a scripts/finetune.py run that has finished"
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} does not exist or is not a folder: {hint}")
        status, state = self.status, self.state or {}
        if status == RUNNING:
            raise RunFolderError(
                f"{self.path} holds a run that has not finished (run_state.json: running since "
                f"{state.get('started', '?')}): it is still training, or it was interrupted. Resume it with "
                "--resume_from_checkpoint, or train again with --overwrite_output_dir"
            )
        if status == FAILED:
            raise RunFolderError(
                f"{self.path} holds a run that failed ({state.get('error', 'no error recorded')}): there are no "
                "results to publish. Train again with --overwrite_output_dir"
            )
        if not (self.path / "config.json").is_file() or not list(self.path.glob("*.safetensors")):
            found = ", ".join(sorted(p.name for p in self.path.iterdir())[:6]) or "nothing"
            raise RunFolderError(
                f"{self.path} holds no saved model (config.json and *.safetensors; it holds {found}): {hint}. A run "
                "saves its best model when training ends; checkpoint-* folders are intermediate"
            )
        if self.test_metrics is None:
            raise RunFolderError(
                f"{self.path} has a model but no test_metrics.json: the run did not finish its test evaluation (the "
                "last step of scripts/finetune.py, which also needs a non-empty test split), so there are no results "
                "to publish"
            )
        return self

    def published_files(self) -> list[str]:
        """The files a push publishes: those of the folder matching `PUBLISHED_FILES`, sorted."""
        return sorted(
            p.name
            for p in self.path.iterdir()
            if p.is_file() and any(fnmatch.fnmatchcase(p.name, pattern) for pattern in PUBLISHED_FILES)
        )

    def copy_checkpoint(self, destination: str | os.PathLike) -> Path:
        """Copies the checkpoint (`CHECKPOINT_FILES`) and the run's record (state, arguments, split) into the new
        folder `destination`, for a derived checkpoint (a recalibrated one) that evaluation still knows the split
        of. Metrics, figures and the card stay behind: they describe the original checkpoint."""
        destination = Path(destination)
        if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
            raise RunFolderError(f"{destination} exists and is not an empty folder: choose a new folder")
        if destination.resolve() == self.path.resolve():
            raise RunFolderError(f"{destination} is the checkpoint itself: choose a new folder")
        destination.mkdir(parents=True, exist_ok=True)
        patterns = (*CHECKPOINT_FILES, STATE_FILE, RUN_ARGS_FILE, SPLIT_FILE)
        for path in sorted(self.path.iterdir()):
            if path.is_file() and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in patterns):
                shutil.copy2(path, destination / path.name)
        return destination

    # ------------------------------------------------------------------------------------------------------------
    # Writing

    def check_writable(self, *, overwrite: bool = False, resume: bool = False) -> None:
        """Refuses a folder that already holds something, unless resuming it or overwriting a run.

        Call it on every process before any of them writes; `start(overwrite=...)` then clears the old run.
        """
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise RunFolderError(f"--output_dir {self.path} is a file, not a folder")
        contents = sorted(p.name for p in self.path.iterdir())
        if not contents or resume:
            return
        listed = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        if not overwrite:
            what = f"a {self.status} run" if self.is_run() and self.status else "files"
            raise RunFolderError(
                f"--output_dir {self.path} already holds {what} ({listed}): a second run there would mix two runs in "
                "one folder. Choose another --output_dir, continue it with --resume_from_checkpoint, or replace it "
                "with --overwrite_output_dir"
            )
        if not self.is_run():
            raise RunFolderError(
                f"--output_dir {self.path} is not an hf-skin run folder ({listed}): --overwrite_output_dir only "
                "replaces a run, it does not delete other files. Choose an empty or new --output_dir"
            )

    def start(self, args: dict[str, Any], *, overwrite: bool = False, world_size: int = 1) -> None:
        """Marks the folder as holding a running run and writes its arguments (tokens are never written)."""
        if overwrite and self.is_run():
            logger.warning("--overwrite_output_dir: deleting the previous run in %s", self.path)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        from . import __version__

        self._write_state({"status": RUNNING, "started": _now(), "world_size": world_size, "hf_skin": __version__})
        clean = {k: v for k, v in args.items() if not k.endswith("_token")}
        self._write_json(RUN_ARGS_FILE, clean)
        self.__dict__.pop("args", None)

    def record_split(self, dataset: str, arguments: dict, lesions: dict[str, list[str]]) -> None:
        """Writes `split.json`: the split's arguments and the sorted lesion ids of each split."""
        record = {
            "dataset": dataset,
            "arguments": arguments,
            "lesions": {name: sorted(set(ids)) for name, ids in lesions.items()},
        }
        self._write_json(SPLIT_FILE, record)
        self.__dict__.pop("split", None)

    def finish(self, **summary: Any) -> None:
        self._write_state({**(self.state or {}), "status": FINISHED, "finished": _now(), **summary})

    def fail(self, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        self._write_state({**(self.state or {}), "status": FAILED, "failed": _now(), "error": message[:2000]})

    def _write_state(self, state: dict) -> None:
        self._write_json(STATE_FILE, state)

    def _write_json(self, name: str, value: Any) -> None:
        # Complete before it appears under its name: a reader never sees half a file.
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
        os.replace(tmp, self.path / name)
