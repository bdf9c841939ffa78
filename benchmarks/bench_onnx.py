"""Benchmark: batch-1 latency and file size of PyTorch eager vs ONNX fp32 vs ONNX int8 (hf_skin.export), side by
side in one run, and the in-browser (WebAssembly) latency of the int8 model on the on-device page.

    python benchmarks/bench_onnx.py [--models cnn,efficientnet-lite0,resnet101,vit] [--lite0_run RUN_DIR]

Models: `cnn` is the study's CNN at 32 px; `efficientnet-lite0` the finished run `--lite0_run` (a real fine-tuned
model, so that its int8 agreement means something) or, without one, the ImageNet checkpoint at 132x176; `resnet101`
and `vit` are ResNet-101 and ViT-Base/16 built from transformers configs at 224² with random weights (latency does
not depend on the weights; the Hub checkpoints cannot be downloaded offline). Each is exported with
`hf_skin.export.export_onnx`, int8 (static, per channel) calibrated on `--calibration_images` real training images
and measured against fp32 on `--validation_images` validation images (with random weights that agreement is not
meaningful).

Timing: one real validation image, preprocessed once; each round times `--iters` calls of each of eager (`model(
**inputs)` under `torch.inference_mode()`), ONNX fp32 and ONNX int8 (onnxruntime CPU), interleaved so that load from
other processes hits all three alike; torch and onnxruntime get `--threads` threads. p50/p95 are over every
call of every round, after `--warmup` untimed calls; ratios are eager's p50 over each ONNX model's p50. The browser
number is the page's own `session.run` time (onnxruntime-web, single-threaded WebAssembly: a static page has no
cross-origin isolation) for the Lite0 int8 model in headless Chromium, over `--browser_iters` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import http.server
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import numpy as np
import torch

from hf_skin.data import SplitArguments, load_ham10000
from hf_skin.export import FP32_FILE, INT8_FILE, export_onnx, run_inputs
from hf_skin.inference import SkinClassifier
from hf_skin.processing import build_image_processor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "ham10000"
MODELS = ("cnn", "efficientnet-lite0", "resnet101", "vit")


def build_checkpoint(name: str, path: Path, lite0_run: str | None) -> Path:
    """A checkpoint folder of `name` (see the module docstring) in `path`."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    from hf_skin.models import build_model, label_maps
    from hf_skin.processing import processor_for

    torch.manual_seed(0)
    if name == "efficientnet-lite0" and lite0_run:
        return Path(lite0_run)
    if name == "cnn":
        model = build_model("cnn")
        processor = processor_for(model)
    elif name == "efficientnet-lite0":
        model = build_model("efficientnet-lite0")
        processor = processor_for(model, "timm/tf_efficientnet_lite0.in1k", image_size=(132, 176))
    elif name == "resnet101":
        config = ResNetConfig(depths=[3, 4, 23, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck")
        model = ResNetForImageClassification(ResNetConfig(**config.to_dict() | label_maps()))
        processor = build_image_processor(224)
    elif name == "vit":
        model = ViTForImageClassification(ViTConfig(**label_maps()))  # ViT-Base/16 at 224
        processor = build_image_processor(224, [0.5] * 3, [0.5] * 3)
    else:
        raise ValueError(f"unknown model {name!r}: one of {', '.join(MODELS)}")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_models(runners: dict, iters: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    times = {name: [] for name in runners}
    for run in runners.values():
        for _ in range(warmup):
            run()
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(iters):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1000)
    return times


@contextlib.contextmanager
def ondevice_page(export: str | os.PathLike):
    """The on-device page built from `export` (`make ondevice`, into a temporary folder), served on 127.0.0.1 and
    opened in headless Chromium, ready to classify: yields the Playwright page (this and benchmarks/parity_onnx.py)."""
    from playwright.sync_api import sync_playwright

    page_dir = Path(tempfile.mkdtemp(prefix="hf_skin_page_"))
    subprocess.run(
        ["make", "--no-print-directory", "-o", "spaces/ondevice/node_modules/.package-lock.json", "ondevice"]
        + [f"EXPORT={export}", f"ONDEVICE_OUT={page_dir}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(page_dir)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{httpd.server_port}/")
            page.wait_for_selector("body[data-ready=true]", timeout=120_000)
            yield page
            browser.close()
    finally:
        httpd.shutdown()
        shutil.rmtree(page_dir, ignore_errors=True)


def browser_latency(export: Path, image: Path, iters: int) -> dict | None:
    """p50/p95 ms of the on-device page's int8 `session.run` in headless Chromium, or None (with why) when the
    browser or onnxruntime-web is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not (ROOT / "spaces/ondevice/node_modules/onnxruntime-web").is_dir():
        return {"skipped": "chromium or onnxruntime-web (make ondevice-deps) is missing"}
    with ondevice_page(export) as page:
        page.set_input_files("#photo", str(image))
        page.click("#classify")
        page.wait_for_function("window.hfSkinResult", timeout=120_000)
        page.evaluate("window.hfSkinBenchmark(5)")  # warm-up
        times = page.evaluate(f"window.hfSkinBenchmark({iters})")
        threads = page.evaluate("self.crossOriginIsolated ? navigator.hardwareConcurrency : 1")
    return {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95), "n": len(times), "threads": threads}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--lite0_run", default=str(ROOT / "runs" / "efficientnet_lite0"))
    parser.add_argument("--iters", type=int, default=20, help="timed calls of each model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration_images", type=int, default=64)
    parser.add_argument("--validation_images", type=int, default=128)
    parser.add_argument("--browser_iters", type=int, default=50)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    lite0_run = args.lite0_run if args.lite0_run and (Path(args.lite0_run) / "config.json").is_file() else None

    split = SplitArguments()
    split.fill()
    splits = load_ham10000(args.data_dir, **split.load_kwargs())
    image_row = splits["validation"].cast_column("image", datasets.Image(decode=False))[0]["image"]
    image_path = Path(tempfile.mkdtemp(prefix="hf_skin_bench_")) / "lesion.jpg"
    image_path.write_bytes(image_row["bytes"] or Path(image_row["path"]).read_bytes())

    results = []
    work = Path(tempfile.mkdtemp(prefix="hf_skin_bench_onnx_"))
    for name in args.models.split(","):
        checkpoint = build_checkpoint(name, work / name, lite0_run)
        classifier = SkinClassifier.from_pretrained(checkpoint)
        calibration, _ = run_inputs(classifier, splits["train"], args.calibration_images, seed=1)
        validation, labels = run_inputs(classifier, splits["validation"], args.validation_images)
        export = work / f"{name}_export"
        spec = export_onnx(classifier, export, "int8", calibration, validation, labels, source=str(checkpoint))
        int8 = spec["models"]["int8"]
        fp32 = SkinClassifier.from_export(export, "fp32", session_options=options)
        q8 = SkinClassifier.from_export(export, "int8", session_options=options)
        torch_inputs = classifier.model_inputs(image_path)
        onnx_inputs = fp32.model_inputs(image_path)

        def eager(model=classifier.model, inputs=torch_inputs):
            with torch.inference_mode():
                model(**inputs)

        times = time_models(
            {
                "eager": eager,
                "onnx_fp32": functools.partial(fp32.model.logits, onnx_inputs),
                "onnx_int8": functools.partial(q8.model.logits, onnx_inputs),
            },
            args.iters,
            args.rounds,
            args.warmup,
        )
        row = {
            "model": name,
            "source": "run " + str(checkpoint) if name == "efficientnet-lite0" and lite0_run else "random init",
            "input_size": spec["image"]["input_size"],
            "parameters": sum(p.numel() for p in classifier.model.parameters()),
            "int8_validation": int8["validation"],
            "bytes": {
                "safetensors": sum(p.stat().st_size for p in Path(checkpoint).glob("*.safetensors")),
                "onnx_fp32": (export / FP32_FILE).stat().st_size,
                "onnx_int8": (export / INT8_FILE).stat().st_size,
            },
        }
        for key, values in times.items():
            row[key] = {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95), "n": len(values)}
        row["speedup_fp32"] = row["eager"]["p50_ms"] / row["onnx_fp32"]["p50_ms"]
        row["speedup_int8"] = row["eager"]["p50_ms"] / row["onnx_int8"]["p50_ms"]
        row["int8_size_ratio"] = row["bytes"]["onnx_int8"] / row["bytes"]["onnx_fp32"]
        if name == "efficientnet-lite0":
            row["browser_int8"] = browser_latency(export, image_path, args.browser_iters)
        results.append(row)
        print(json.dumps(row), flush=True)

    print(
        f"\n{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}\n"
    )
    print(
        "| model | eager p50 / p95 ms | ONNX fp32 p50 / p95 ms | int8 p50 / p95 ms | fp32 speed-up | int8 speed-up "
        "| fp32 MB | int8 MB (ratio) | int8 agreement with fp32 (images) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        mb = {k: v / 2**20 for k, v in r["bytes"].items()}
        print(
            f"| {r['model']} | {r['eager']['p50_ms']:.2f} / {r['eager']['p95_ms']:.2f} "
            f"| {r['onnx_fp32']['p50_ms']:.2f} / {r['onnx_fp32']['p95_ms']:.2f} "
            f"| {r['onnx_int8']['p50_ms']:.2f} / {r['onnx_int8']['p95_ms']:.2f} | {r['speedup_fp32']:.2f}× "
            f"| {r['speedup_int8']:.2f}× | {mb['onnx_fp32']:.1f} | {mb['onnx_int8']:.1f} ({r['int8_size_ratio']:.2f}) "
            f"| {r['int8_validation']['top1_agreement']:.4f} ({r['int8_validation']['n']}) |"
        )
    for r in results:
        if r.get("browser_int8"):
            print(
                f"\nIn the browser ({r['model']} int8, onnxruntime-web WebAssembly): {json.dumps(r['browser_int8'])}"
            )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
