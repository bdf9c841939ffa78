"""Benchmark: build HAM10000 from the raw download folder, cold and from cache, with peak memory.

    python benchmarks/bench_dataset.py [--data_dir ../shared/ham10000]

Each measurement runs in its own subprocess so that each peak RSS (`VmHWM`, the process's high-water mark)
belongs to that measurement alone. Peak RSS includes the pages of memory-mapped Arrow files the process touched
(file-backed, reclaimable, proportional to the data it reads), so the child also samples its anonymous memory
(`RssAnon` in /proc/self/status, every 2 ms): the heap, which is what must not grow with the number of images.
"Quarter" and "half" are raw folders holding every 4th / every 2nd lesion's metadata rows and only their image and
mask files, as symlinks: memory that grows with the number of images shows up as growth from quarter to full.
"Quarter/half, 600x450" have the same rows but every image linked to one of the 62 full-resolution samples (about
45x the bytes): heap that held image bytes would grow with their size and count; heap that holds the row table and
one bounded Arrow batch would not.
The OS file cache is warmed first, so the numbers measure the builder rather than the disk.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "ham10000"
METADATA = "HAM10000_metadata.csv"
MASKS = "HAM10000_segmentations_lesion_tschandl"


def proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{field}:")) / 1024


def peak_rss_mib() -> float:
    # VmHWM, the high-water mark of this process image: ru_maxrss can carry over the parent's peak across
    # fork+exec (Linux keeps the larger of the two), which made the child report the parent's memory.
    return proc_status_mib("VmHWM")


def anon_rss_mib() -> float:
    return proc_status_mib("RssAnon")


class AnonPeak(threading.Thread):
    """Samples the process's anonymous RSS until stopped (the kernel keeps no high-water mark for it)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = anon_rss_mib(), threading.Event()

    def run(self):
        while not self.done.wait(0.002):
            self.peak = max(self.peak, anon_rss_mib())


def child(data_dir: str, cache_dir: str) -> None:
    """One measurement: import, then load_ham10000 (build or cache hit, plus the split); print a JSON line."""
    from hf_skin.data import load_ham10000

    imported, anon_imported = peak_rss_mib(), anon_rss_mib()
    sampler = AnonPeak()
    sampler.start()
    start = time.perf_counter()
    splits = load_ham10000(data_dir, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    result = {"rows": sum(map(len, splits.values())), "seconds": seconds, "peak_rss_mib": peak_rss_mib()}
    result.update(import_rss_mib=imported, anon_import_mib=anon_imported, anon_peak_mib=sampler.peak)
    print(json.dumps(result))


def measure(data_dir: Path, cache_dir: Path) -> dict:
    command = [sys.executable, __file__, "--child", "--data_dir", str(data_dir), "--cache_dir", str(cache_dir)]
    env = dict(os.environ, HF_DATASETS_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    if result.returncode:
        sys.exit(f"measurement failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_subset(data_dir: Path, out: Path, every: int, large_images: bool = False) -> int:
    """A raw folder with every `every`-th lesion's rows, their images and masks symlinked; returns the row count.

    With `large_images`, each image links to one of the full-resolution samples (cycling) instead of its own file.
    """
    with open(data_dir / METADATA, newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames
    lesions = sorted({row["lesion_id"] for row in rows})[::every]
    keep = set(lesions)
    rows = [row for row in rows if row["lesion_id"] in keep]
    wanted = {row["image_id"] for row in rows}
    large = sorted((data_dir / "full_resolution_sample").glob("*.jpg"))
    linked = 0
    for part in sorted(data_dir.glob("HAM10000_images_part_*")) + [data_dir / MASKS]:
        (out / part.name).mkdir(parents=True)
        for path in sorted(part.iterdir()):
            if path.name.split(".")[0].removesuffix("_segmentation") in wanted:
                target = path
                if large_images and part.name != MASKS:
                    target, linked = large[linked % len(large)], linked + 1
                (out / part.name / path.name).symlink_to(target)
    with open(out / METADATA, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def warm_file_cache(data_dir: Path) -> None:
    for path in data_dir.rglob("*"):
        if path.is_file():
            path.read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="HAM10000 raw download folder")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(str(args.data_dir), args.cache_dir)
    if not (args.data_dir / METADATA).is_file():
        sys.exit(f"no HAM10000 download at {args.data_dir} (pass --data_dir): nothing to benchmark")

    warm_file_cache(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        make_subset(args.data_dir, work / "quarter", 4)
        make_subset(args.data_dir, work / "quarter_large", 4, large_images=True)
        make_subset(args.data_dir, work / "half", 2)
        make_subset(args.data_dir, work / "half_large", 2, large_images=True)
        runs = [("quarter", work / "quarter"), ("half", work / "half"), ("full", args.data_dir)]
        runs += [("quarter, 600x450", work / "quarter_large"), ("half, 600x450", work / "half_large")]
        results = []
        for name, data_dir in runs:
            cache = work / f"cache_{name.replace(', ', '_')}"
            results.append((f"{name}, cold build", measure(data_dir, cache)))
            results.append((f"{name}, cached", measure(data_dir, cache)))
            size = sum(path.stat().st_size for path in cache.rglob("*") if path.is_file())
            results[-2][1]["cache_mib"] = size / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        "| run | rows | seconds | images/s | peak RSS (MiB) | peak RSS - after imports (MiB) "
        "| peak anon RSS - after imports (MiB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results:
        print(
            f"| {name} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['import_rss_mib']:.0f} | "
            f"{r['anon_peak_mib'] - r['anon_import_mib']:.0f} |"
        )
    print(f"\nRSS after imports: {results[0][1]['import_rss_mib']:.0f} MiB.", end="")
    for name, r in results:
        if "cache_mib" in r:
            print(f"\nCache entry ({name}): {r['cache_mib']:.0f} MiB", end="")
    print()


if __name__ == "__main__":
    main()
