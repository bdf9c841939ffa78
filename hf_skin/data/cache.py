"""The build cache of raw download folders: one Arrow entry per state of a folder's files, keyed by a fingerprint
of them, memory-mapped on later loads; the housekeeping that keeps one entry per folder.

An entry is a folder `ham10000-<fingerprint>` under the cache root (`hf_skin.locations.cache_root`) holding the
Arrow shards and a build report (`hf_skin_build.json`, written last: an entry without it is incomplete). Builds
are staged in `.build-*` folders beside the entries and renamed into place, so that a build killed midway never
leaves an entry that looks complete.
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from ..locations import cache_root

logger = logging.getLogger(__name__)

# Bump when the cached build changes (features, checks, layout): old cache entries are then ignored.
CACHE_VERSION = 3
BUILD_REPORT = "hf_skin_build.json"
_ENTRY_PREFIX = "ham10000-"
_STAGING_PREFIX = ".build-"
# The cache key reads this much of each file's head and of its tail (the whole file when it is smaller): a file
# replaced by another of the same size with its mtime preserved is still noticed (a PNG's tail holds the checksum
# of all its pixels, a JPEG's the end of its entropy-coded data).
KEY_BYTES = 4096
# A staging folder or incomplete entry this old is left by a build that died (a live build is minutes at most).
_STALE_SECONDS = 86400


def entry_path(
    cache_dir: str | os.PathLike | None,
    kind: str,
    options: str,
    root: Path,
    contents: list[bytes],
    files: list[tuple[str, int, int]],
) -> Path:
    """The cache entry of a raw folder in its present state (whether built yet or not), under `cache_dir` (default:
    `hf_skin.locations.cache_root`'s).

    The key: the source's `kind` and load `options`, the whole CSV file(s) `contents`, and for each of `files`
    (path relative to `root`, size, mtime_ns) its name, size, mtime and first and last `KEY_BYTES`.
    """
    digest = hashlib.sha256(f"hf_skin {kind} v{CACHE_VERSION} {options}\n".encode())
    digest.update(contents[0])
    for content in contents[1:]:  # delimited by their length, so that no byte can move from one file to the next
        digest.update(f"\n\0{len(content)}\0".encode() + content)
    for relpath, size, mtime_ns in files:
        digest.update(f"{relpath}\0{size}\0{mtime_ns}\n".encode())
        _hash_head_and_tail(digest, root / relpath, size)
    return cache_root(cache_dir) / f"{_ENTRY_PREFIX}{digest.hexdigest()[:24]}"


def _hash_head_and_tail(digest, path: Path, size: int) -> None:
    """Feed the first and last `KEY_BYTES` of a file (all of it when smaller) to `digest`."""
    with open(path, "rb") as f:
        if size <= 2 * KEY_BYTES:
            digest.update(f.read())
            return
        digest.update(f.read(KEY_BYTES))
        f.seek(-KEY_BYTES, os.SEEK_END)
        digest.update(f.read())


def load_entry(cached: Path) -> tuple[Dataset, dict] | None:
    """The complete entry `cached`, memory-mapped, and its build report; `None` when it has not been built (or was
    damaged: then it is removed, to be built again)."""
    if not (cached / BUILD_REPORT).is_file():
        return None
    try:
        report = json.loads((cached / BUILD_REPORT).read_text())
        return open_entry(cached, report), report
    except Exception as err:  # a cache entry damaged by hand: build it again rather than fail
        logger.warning("cache entry %s is damaged (%s: %s); rebuilding it", cached, type(err).__name__, err)
        shutil.rmtree(cached, ignore_errors=True)
        return None


def open_entry(cached: Path, report: dict) -> Dataset:
    """The cache entry's Arrow files, memory-mapped (features, ClassLabel names included, live in their schema)."""
    shards = [Dataset.from_file(os.fspath(cached / name)) for name in report["files"]]
    return shards[0] if len(shards) == 1 else concatenate_datasets(shards)


@contextlib.contextmanager
def staging_folder(cached: Path) -> Iterator[Path]:
    """A fresh folder beside the entry `cached` for building it, removed when the block ends (one left by a build
    that was killed is removed by a later build's `evict`)."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=cached.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def commit_entry(work: Path, shards: list[str], report: dict, cached: Path) -> dict:
    """Makes the Arrow `shards` built in `work` (a `staging_folder`) the entry `cached`, with its build report
    (`report` plus the cache version and the shards' names in the entry), and returns that report."""
    # Move the shards into the entry instead of save_to_disk: that would copy them once more and, re-reading them in
    # batches of 1,000 rows, hold ~1,000 images in memory at a time.
    report = {**report, "cache_version": CACHE_VERSION}
    report["files"] = [f"data-{i:05d}-of-{len(shards):05d}.arrow" for i in range(len(shards))]
    staged = work / "dataset"
    staged.mkdir()
    for shard, name in zip(shards, report["files"]):
        os.replace(shard, staged / name)
    (staged / BUILD_REPORT).write_text(json.dumps(report, indent=2))  # written last: marks a complete entry
    if cached.exists() and not (cached / BUILD_REPORT).is_file():
        shutil.rmtree(cached)  # an entry without its report is incomplete or damaged
    try:
        staged.rename(cached)
    except OSError:
        if not (cached / BUILD_REPORT).is_file():  # not another process that finished the same build first
            raise
    return report


def evict(current: Path) -> None:
    """Keeps one entry per source folder: after `current` was built, removes the other entries of its folder (an
    earlier state of its files, or other load options) and the entries of folders that no longer exist. Also removes
    staging folders and incomplete entries left by builds that died over a day ago.

    A folder's older entry is not worth keeping: building one again takes seconds (2 s for HAM10000's 8,584 images,
    `benchmarks/RESULTS.md`), while each entry holds every image's bytes.
    """
    now = time.time()
    try:
        source = _source_of(current)
    except (OSError, ValueError):  # removed by another process meanwhile: nothing to compare with
        return
    for path in current.parent.iterdir():
        if path == current:
            continue
        try:
            if path.name.startswith(_STAGING_PREFIX) or (
                path.name.startswith(_ENTRY_PREFIX) and not (path / BUILD_REPORT).is_file()
            ):
                if now - path.stat().st_mtime > _STALE_SECONDS:
                    logger.info("removing %s, left by a build that did not finish", path)
                    shutil.rmtree(path, ignore_errors=True)
                continue
            if not path.name.startswith(_ENTRY_PREFIX):
                continue  # not ours (e.g. pretrained/)
            built_from = _source_of(path)
        except (OSError, ValueError):  # removed by another process meanwhile, or a damaged report: leave it
            continue
        if built_from == source:
            reason = f"{source} was built again"
        elif not os.path.isdir(built_from):
            reason = f"the folder it was built from ({built_from}) no longer exists"
        else:
            continue
        logger.info("evicting cache entry %s: %s", path, reason)
        shutil.rmtree(path, ignore_errors=True)


def _source_of(entry: Path) -> str:
    """The folder an entry was built from, as its build report records it (a real path)."""
    source = json.loads((entry / BUILD_REPORT).read_text()).get("source")
    return os.path.realpath(source) if source else ""
