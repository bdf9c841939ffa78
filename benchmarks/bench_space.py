"""Benchmark: the Space's prediction latency on this CPU, with and without the heatmap, and a concurrent load test.

    python benchmarks/bench_space.py [--models cnn,resnet101,vit] [--rounds 3] [--repeats 10] [--concurrent 50]

Latency: one request's work as `spaces/app.py` does it, minus HTTP, on a 600×450 JPEG (the size of HAM10000's
full-resolution images): *without heatmap* is `SkinClassifier.predict(path)` (decode, preprocess, forward);
*with heatmap* is the app's `predict()` (`hf_skin.explain.explain`, whose forward pass also gives the prediction:
decode, preprocess, Grad-CAM's forward and backward pass, or the model's forward plus attention rollout's forward
with attention weights, and the overlay). Models: `cnn` is the study's CNN as
`--model cnn` builds it (32×32); `resnet101` is full-size ResNet-101 and `vit` ViT-Base/16, randomly initialised
(latency does not depend on the weights; the Hub checkpoints cannot be downloaded offline) with the image
processors of microsoft/resnet-101 (224 centre crop) and google/vit-base-patch16-224. The two modes of each model
are interleaved, `--repeats` calls each, for `--rounds` rounds after one untimed call each; p50/p95 are over all
calls, the ratio is the median of the rounds' median(with) / median(without).

Load test: `spaces/app.py` launched as a Space runs it (a subprocess, `HF_SKIN_MODEL` set to a saved `--load_model`
checkpoint) on 127.0.0.1, then `--concurrent` requests submitted at once through one `gradio_client.Client` (as
many worker threads as requests, so all are in flight together and wait in the app's queue); it reports failures
(must be 0), the wall time and the per-request latency, queue wait included.

Worst uploads, then, one at a time to the same Space: PNGs of one smooth gradient, small on disk and huge in pixels
(a 12000 × 12000 one is the 445 kB file of issue 28, over the Space's pixel limit; a 6000 × 5000 one is at the
limit's 30 MP), and the 600×450 photo for reference. For each: the request's wall time (upload included), the Space
process's peak resident memory during it over its resident memory just before (`/proc/PID/status` VmRSS sampled
every 2 ms), what it still held after, and whether it was classified or refused (with the message).
`--app OLD.py` serves another version of the page (e.g. `git show HEAD~1:spaces/app.py > /tmp/old_app.py`), to
measure before and after a change.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    ConvNextImageProcessor,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from hf_skin.inference import SkinClassifier
from hf_skin.models import build_model, label_maps
from hf_skin.processing import processor_for

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("cnn", "resnet101", "vit")


def load_space_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hf_skin_space_app", ROOT / "spaces" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str) -> SkinClassifier:
    torch.manual_seed(0)
    if name == "cnn":
        model = build_model("cnn")
        return SkinClassifier(model, processor_for(model))
    if name == "resnet101":
        config = ResNetConfig(
            depths=[3, 4, 23, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck", **label_maps()
        )
        # microsoft/resnet-101's processor: short side to 224 / 0.875, centre crop 224.
        return SkinClassifier(
            ResNetForImageClassification(config), ConvNextImageProcessor(size={"shortest_edge": 224})
        )
    if name == "vit":
        processor = ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return SkinClassifier(ViTForImageClassification(ViTConfig(image_size=224, **label_maps())), processor)
    raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")


def test_photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:450, 0:600]
    blob = np.exp(-(((cols - 300) / 120.0) ** 2 + ((rows - 225) / 90.0) ** 2))[..., None]
    pixels = np.array([215, 165, 150]) * (1 - 0.65 * blob) + rng.normal(0, 6, (450, 600, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def bench_latency(name: str, photo: Path, app, rounds: int, repeats: int) -> dict:
    classifier = build(name)
    modes = {
        "without heatmap": lambda: classifier.predict(photo),
        "with heatmap": lambda: app.predict(classifier, {"path": str(photo)}),
    }
    for call in modes.values():
        call()  # untimed: first-call allocations
    seconds = {mode: [] for mode in modes}
    ratios = []
    for round_ in range(rounds):
        medians = {}
        for mode, call in modes.items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            seconds[mode] += times
            medians[mode] = statistics.median(times)
        ratios.append(medians["with heatmap"] / medians["without heatmap"])
        print(f"  {name:<10} round {round_ + 1}: {medians}", file=sys.stderr, flush=True)
    return {"model": name, "seconds": seconds, "ratios": ratios}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gradient_png(path: Path, width: int, height: int) -> Path:
    """A PNG of a smooth gradient: it compresses to a few hundred kB whatever its size in pixels."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None] + np.zeros(width, dtype=np.float32)
    Image.fromarray(np.repeat(rows.astype(np.uint8)[..., None], 3, axis=2)).save(path)
    return path


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def one_request(client, pid: int, path: Path) -> dict:
    """One upload of `path` to the Space: wall time, peak and after resident memory over before (MiB), outcome."""
    import threading

    from gradio_client import handle_file

    before, peak, done = resident_kib(pid), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_kib(pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        summary = client.predict(handle_file(str(path)), api_name="/predict")[1]
        outcome = "classified" if "Probability of a malignant class" in summary else f"answered: {summary[:80]}"
    except Exception as err:  # the Space's refusal, as gradio_client raises it
        outcome = f"refused: {str(err).splitlines()[0][:160]}"
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    time.sleep(1.0)  # what the process keeps once the request is over
    return {
        "file": path.name,
        "size_kb": path.stat().st_size / 1e3,
        "wall": wall,
        "peak_mib": (max(peak[0], before) - before) / 1024,
        "after_mib": (resident_kib(pid) - before) / 1024,
        "outcome": outcome,
    }


def load_test(model: str, photo: Path, concurrent: int, workdir: Path, app: Path) -> dict:
    from gradio_client import Client, handle_file

    checkpoint = workdir / f"{model}_checkpoint"
    classifier = build(model)
    classifier.model.save_pretrained(checkpoint)
    classifier.processor.save_pretrained(checkpoint)
    port = free_port()
    env = dict(
        os.environ,
        HF_SKIN_MODEL=str(checkpoint),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        HF_HUB_OFFLINE="1",
    )
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, str(app)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Space did not start at {url} (exit code {server.poll()})") from None
                time.sleep(0.5)
        client = Client(url, verbose=False, max_workers=concurrent)
        upload = handle_file(str(photo))
        latencies, failures = [], []

        def submit():
            submitted = time.perf_counter()
            job = client.submit(upload, api_name="/predict")
            job.add_done_callback(lambda _: latencies.append(time.perf_counter() - submitted))
            return job

        start = time.perf_counter()
        for job in [submit() for _ in range(concurrent)]:
            try:
                job.result(timeout=3600)
            except Exception as err:  # every failure is counted and shown
                failures.append(repr(err))
        wall = time.perf_counter() - start
        worst = [
            one_request(Client(url, verbose=False), server.pid, path)
            for path in (
                photo,
                gradient_png(workdir / "gradient_6000x5000.png", 6000, 5000),
                gradient_png(workdir / "gradient_12000x12000.png", 12000, 12000),
            )
        ]
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        "model": model,
        "requests": concurrent,
        "failures": failures,
        "wall": wall,
        "latencies": latencies,
        "worst": worst,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of with/without heatmap")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per mode and round")
    parser.add_argument("--concurrent", type=int, default=50, help="requests in flight at once in the load test")
    parser.add_argument("--load_model", default="cnn", choices=MODELS, help="the model the load-tested Space serves")
    parser.add_argument("--app", type=Path, default=ROOT / "spaces" / "app.py", help="the Space's app.py to serve")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        parser.error(f"unknown models {sorted(set(models) - set(MODELS))}: choose from {', '.join(MODELS)}")

    print(
        f"torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load average at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    app = load_space_app()
    with tempfile.TemporaryDirectory(prefix="bench_space_") as tmp:
        photo = test_photo(Path(tmp) / "lesion.jpg")
        results = [bench_latency(name, photo, app, args.rounds, args.repeats) for name in models]
        load = load_test(args.load_model, photo, args.concurrent, Path(tmp), args.app)

    print("\n| model | heatmap | calls | p50 (ms) | p95 (ms) | with / without (range over rounds) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for result in results:
        ratios = result["ratios"]
        for mode, times in result["seconds"].items():
            ratio = (
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
                if mode == "with heatmap"
                else ""
            )
            print(
                f"| {result['model']} | {mode} | {len(times)} | {percentile(times, 50) * 1000:.0f} "
                f"| {percentile(times, 95) * 1000:.0f} | {ratio} |"
            )
    latencies = load["latencies"] or [float("nan")]
    print(
        f"\nLoad test: {load['requests']} concurrent requests to the Space serving `{load['model']}` (with heatmap): "
        f"{len(load['failures'])} failures, {load['wall']:.1f} s wall, {load['requests'] / load['wall']:.1f} "
        f"requests/s, latency incl. queue p50 {percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} "
        f"s, max {max(latencies):.2f} s"
    )
    for failure in load["failures"][:5]:
        print(f"  failure: {failure}")
    print(f"\nWorst uploads, one at a time ({args.app}):\n")
    print("| file | size (kB) | wall (s) | peak memory over before (MiB) | held after (MiB) | outcome |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for row in load["worst"]:
        print(
            f"| {row['file']} | {row['size_kb']:.0f} | {row['wall']:.2f} | {row['peak_mib']:.0f} "
            f"| {row['after_mib']:.0f} | {row['outcome']} |"
        )
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if load["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
