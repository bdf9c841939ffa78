"""Dataset preparation (`scripts/prepare_dataset.py`): HAM10000 from any source, split by lesion, written as a
`save_to_disk` folder or parquet files with its data-analysis plots and dataset card, optionally pushed to the Hub.

An output folder holds one preparation. Preparing into a folder that holds an earlier one replaces it: the earlier
dataset files, plots and card are deleted first, so that no stale `dataset_dict.json` outranks new parquet files
when the folder is loaded. A folder holding anything else is refused.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from datasets.table import embed_table_storage
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi

from .data import SOURCE_RECORD, SplitArguments, describe_data, resolve_source
from .dataset_card import dataset_card
from .hub import check_repo_id, hub_token, remote_files
from .runs import CARD_FILE

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
# The dataset repo's layout, as `datasets.DatasetDict.push_to_hub` writes it: data/{split}-{i:05d}-of-{n:05d}.parquet.
DATA_DIR = "data"
# Parquet shards of at most about this much Arrow data (datasets' own default).
MAX_SHARD_BYTES = 500 * 2**20
# save_to_disk writes this beside one folder per split (each with these files).
DATASET_DICT_FILE = "dataset_dict.json"
SAVED_SPLIT_FILES = ("state.json", "dataset_info.json")


class OutputFolderError(ValueError):
    """An `--output_dir` that holds something other than an earlier preparation."""


@dataclass(kw_only=True)
class DatasetPreparationArguments(SplitArguments):
    """Arguments of `prepare_dataset` and `scripts/prepare_dataset.py`.

    The split's arguments (`validation_size`, `test_size`, `split_seed`, `on_missing`) are `SplitArguments`', the
    same as training's; their defaults (`SPLIT_DEFAULTS`) are filled in here.
    """

    source: str = field(
        metadata={"help": "HAM10000 raw download folder, a folder written by this script, or a Hub dataset id."}
    )
    output_dir: str = field(
        metadata={
            "help": "Where to write the dataset, plots/ and README.md: a new or empty folder, or one this script "
            "wrote before (then replaced)."
        }
    )
    format: str = field(
        default="disk",
        metadata={
            "help": "'disk' (datasets.save_to_disk) or 'parquet' (one {split}.parquet file per split).",
            "choices": ["disk", "parquet"],
        },
    )
    resplit: bool = field(
        default=True, metadata={"help": "Split again even when the source already has train/validation/test."}
    )
    with_masks: bool = field(default=True, metadata={"help": "Add the lesion masks when the source has them."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Cache of built raw folders; defaults to $HF_SKIN_CACHE or ~/.cache/hf_skin."}
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={"help": "Also push to this Hub dataset repo (user/name); the token comes from HF_TOKEN."},
    )
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self):
        if self.format not in ("disk", "parquet"):
            raise ValueError(f"format must be 'disk' or 'parquet', got {self.format!r}")
        self.fill()


def write_parquet(dataset: Dataset, path: Path, desc: str | None = None) -> Path:
    """Writes `dataset` as one parquet file that stands alone: images are embedded as bytes, as `push_to_hub` does
    (`to_parquet` alone writes an `Image` column as stored, possibly as paths to files elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    embedded = dataset.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True, desc=desc)
    embedded.with_format(None).to_parquet(path)
    return path


def _describe_source(source: str) -> str:
    if describe_data(source)["synthetic"]:
        return (
            "**synthetic lesions drawn by hf-skin** (`python -m hf_skin.synthetic`), in the HAM10000 release's "
            "layout: "
            "not photos of real skin. A model trained on them is a demo that knows nothing about real lesions."
        )
    kind, _ = resolve_source(source)  # what load_ham10000 will read it as
    if kind == "raw":
        return (
            "a local copy of the HAM10000 release as downloaded (`HAM10000_metadata.csv` and the image folders, "
            "Harvard Dataverse / Kaggle layout)."
        )
    if kind == "isic":
        return (
            "a local copy of the ISIC 2018 Task 3 training download (`ISIC2018_Task3_Training_Input/`, the ground "
            "truth and lesion groupings CSVs; no age, sex or localization)."
        )
    if kind in ("disk", "parquet"):
        return "a previously prepared copy (parquet or `save_to_disk` folder)."
    return f"the Hub dataset [`{source}`](https://huggingface.co/datasets/{source})."


def _is_prepared_entry(entry: Path) -> bool:
    """Whether a top-level entry of an output folder is something `prepare_dataset` writes."""
    if entry.is_file():
        return entry.name in (CARD_FILE, DATASET_DICT_FILE, SOURCE_RECORD) or entry.suffix == ".parquet"
    if entry.name == PLOTS_DIR:
        return all(p.is_file() and p.suffix == ".png" for p in entry.iterdir())
    return all((entry / name).is_file() for name in SAVED_SPLIT_FILES)  # a save_to_disk split


def earlier_preparation(output_dir: str | Path, source: str | None = None) -> list[Path]:
    """The entries of an earlier preparation in `output_dir` (none when it is new or empty).

    Raises `OutputFolderError` when the folder holds anything `prepare_dataset` does not write (hidden entries
    aside), or is the `source` itself: replacing the preparation would delete someone's files, or the source.
    """
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return []
    if not output_dir.is_dir():
        raise OutputFolderError(f"--output_dir {output_dir} is a file, not a folder")
    if source is not None and Path(source).exists() and Path(source).resolve() == output_dir.resolve():
        raise OutputFolderError(
            f"--output_dir {output_dir} is the --source: preparing it would delete the dataset it reads. Write to "
            "another --output_dir"
        )
    entries = sorted(entry for entry in output_dir.iterdir() if not entry.name.startswith("."))
    foreign = [entry.name for entry in entries if not _is_prepared_entry(entry)]
    if foreign:
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"--output_dir {output_dir} holds files that prepare_dataset did not write ({listed}): a preparation "
            "there would replace or mix with them. Choose a new or empty --output_dir"
        )
    return entries


def _save(dataset_dict: DatasetDict, output_dir: Path, format: str) -> list[Path]:
    if format == "disk":
        dataset_dict.save_to_disk(output_dir)  # embeds image files: the folder stands alone
        return [output_dir / DATASET_DICT_FILE, *(output_dir / split for split in dataset_dict)]
    return [write_parquet(ds, output_dir / f"{split}.parquet", desc=split) for split, ds in dataset_dict.items()]


def prepare_dataset(args: DatasetPreparationArguments) -> dict[str, object]:
    """Loads HAM10000, splits it, and writes the dataset, `plots/*.png` and a `README.md` card into `output_dir`.

    An earlier preparation in `output_dir` is replaced (see `earlier_preparation`); it is deleted only once the new
    dataset has loaded. Pushes everything to `args.push_to_hub` when set, in one commit.

    Returns:
        `dict`: `dataset` (the `DatasetDict`), `data_files` (what `save_to_disk` or `to_parquet` wrote),
        `card_path`, `plots` (name -> PNG path) and `url` (the Hub repo, or `None`).
    """
    from .data import load_ham10000
    from .plots import plot_data_analysis

    output_dir = Path(args.output_dir)
    earlier = earlier_preparation(output_dir, args.source)  # a folder that is refused costs no loading
    dataset_dict = load_ham10000(
        args.source,
        **args.load_kwargs(),
        resplit=args.resplit,
        with_masks=args.with_masks,
        cache_dir=args.cache_dir,
    )
    if earlier:
        logger.warning(
            "Replacing the earlier preparation in %s: deleting %s", output_dir, ", ".join(e.name for e in earlier)
        )
        for entry in earlier:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)
    data_files = _save(dataset_dict, output_dir, args.format)
    # What the copy was made from: a model trained on it says so (`hf_skin.data.describe_data`)
    (output_dir / SOURCE_RECORD).write_text(json.dumps(describe_data(args.source), indent=2) + "\n")
    plots = plot_data_analysis(dataset_dict, output_dir / PLOTS_DIR)

    sizes = ", ".join(f"{split} {ds.num_rows:,} images" for split, ds in dataset_dict.items())
    if args.resplit:
        split_description = (
            f"Splits were made by `hf_skin.data.load_ham10000` with split seed {args.split_seed}: whole lesions, "
            f"not images, are assigned to a split, stratified by diagnosis, with about {args.test_size:.0%} of the "
            f"lesions in test and {args.validation_size:.0%} in validation ({sizes})."
        )
    else:
        split_description = f"The splits are the source's own ({sizes})."
    card = dataset_card(
        dataset_dict,
        repo_id=args.push_to_hub,
        source_description=_describe_source(args.source),
        split_description=split_description,
        plots={name: path.relative_to(output_dir).as_posix() for name, path in plots.items()},
    )
    card_path = output_dir / CARD_FILE
    card.save(card_path)

    url = None
    if args.push_to_hub:
        url = push_dataset_to_hub(
            dataset_dict, args.push_to_hub, card=card, plots_dir=output_dir / PLOTS_DIR, private=args.private
        )
    return {"dataset": dataset_dict, "data_files": data_files, "card_path": card_path, "plots": plots, "url": url}


def _arrow_bytes(dataset) -> int:
    """About how much Arrow data the rows of `dataset` hold (its table may hold more rows than a selection uses)."""
    table = dataset.data
    return table.nbytes * len(dataset) // max(table.num_rows, 1)


def _card_with_data_metadata(card: DatasetCard, dataset_dict: DatasetDict, parquet_bytes: int) -> DatasetCard:
    """`card` with the `configs` (split -> data files) and `dataset_info` (features, sizes) metadata that the Hub and
    `datasets.load_dataset` read, as `DatasetDict.push_to_hub` would add them."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs

    pushed = DatasetCard(str(card))
    info = DatasetInfo(features=next(iter(dataset_dict.values())).features, splits=SplitDict())
    for split, ds in dataset_dict.items():
        info.splits.add(SplitInfo(name=split, num_bytes=_arrow_bytes(ds), num_examples=len(ds)))
    info.download_size = parquet_bytes
    info.dataset_size = sum(_arrow_bytes(ds) for ds in dataset_dict.values())
    DatasetInfosDict({"default": info}).to_dataset_card_data(pushed.data)
    data_files = [{"split": split, "path": f"{DATA_DIR}/{split}-*"} for split in dataset_dict]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(pushed.data)
    return pushed


def push_dataset_to_hub(
    dataset_dict: DatasetDict,
    repo_id: str,
    *,
    card: DatasetCard,
    plots_dir: str | Path | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "HAM10000 splits (parquet), dataset card and data-analysis plots",
) -> str:
    """Pushes a prepared HAM10000 `DatasetDict` to a Hub dataset repo in one commit: parquet shards, card, plots.

    The splits go to `data/{split}-{i:05d}-of-{n:05d}.parquet` (images embedded, as `DatasetDict.push_to_hub` writes
    them), the card gets the `configs` and `dataset_info` metadata that map those files to splits, and
    `plots/*.png` go beside it, all in one commit: a push that fails leaves the repo as it was. Data files and plots
    of an earlier push that this one does not have are deleted in the same commit (logged). The shards are staged
    in a temporary folder (as large as the parquet data).

    Args:
        dataset_dict (`DatasetDict`): the splits to push.
        repo_id (`str`): `user/name` or `org/name` of the dataset repo (created when missing).
        card (`DatasetCard`): the README, e.g. from `hf_skin.dataset_card.dataset_card`.
        plots_dir (`str` or `Path`, *optional*): folder whose `*.png` files are uploaded under `plots/`.
        private (`bool`, *optional*, defaults to `False`): visibility of the repo if this call creates it.
        token (`str`, *optional*): defaults to `HF_TOKEN` or the `hf auth login` token; never logged or written.

    Returns:
        `str`: the URL of the dataset repo.
    """

    api = HfApi(token=hub_token(token))
    repo_url = api.create_repo(check_repo_id(repo_id), repo_type="dataset", private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    with tempfile.TemporaryDirectory(prefix="hf_skin_dataset_push_") as staging:
        staging = Path(staging)
        additions: dict[str, Path] = {}
        for split, ds in dataset_dict.items():
            num_shards = max(1, math.ceil(_arrow_bytes(ds) / MAX_SHARD_BYTES))
            for index in range(num_shards):
                name = f"{DATA_DIR}/{split}-{index:05d}-of-{num_shards:05d}.parquet"
                shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
                additions[name] = write_parquet(shard, staging / name, desc=f"{split} shard {index + 1}/{num_shards}")
        parquet_bytes = sum(path.stat().st_size for path in additions.values())
        for png in sorted(Path(plots_dir).glob("*.png")) if plots_dir else []:
            additions[f"{PLOTS_DIR}/{png.name}"] = png
        pushed_card = _card_with_data_metadata(card, dataset_dict, parquet_bytes)
        remote = remote_files(api, repo_id, "dataset") or []
        stale = sorted(
            path for path in remote if path.startswith((f"{DATA_DIR}/", f"{PLOTS_DIR}/")) and path not in additions
        )
        if stale:
            logger.warning(
                "Deleting %d files of %s that this push does not have: %s", len(stale), repo_id, ", ".join(stale)
            )
        api.create_commit(
            repo_id,
            repo_type="dataset",
            operations=[CommitOperationDelete(path) for path in stale]
            + [CommitOperationAdd(name, path) for name, path in additions.items()]
            + [CommitOperationAdd(CARD_FILE, str(pushed_card).encode())],
            commit_message=commit_message,
        )
    logger.info("Pushed the dataset to %s", repo_url)
    return str(repo_url)
