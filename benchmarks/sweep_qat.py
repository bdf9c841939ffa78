"""How much quantisation-aware fine-tuning int8 needs (`hf_skin.quantization.quantization_aware_copy`, what
training's `--int8_ready` makes with `--keep_rounded`): a finished run's static per-channel int8 model (onnxruntime,
calibrated on its training images as `export_onnx.py` does) measured against its fp32 ONNX model on the validation
split, after 0, N, 2N, ... fine-tuning steps at each learning rate (each chunk goes on from the last one's weights,
with a fresh optimiser; the teacher is always the original model).

    python benchmarks/sweep_qat.py runs/efficientnet_lite0 --learning_rates 2e-5,5e-5 --steps 300 --chunks 3

Prints one JSON line per measurement (and writes them all to `--output`): steps, learning rate, images that differ
in top-1, agreement, the largest probability difference, both balanced accuracies, the fine-tuning seconds.
Choose on validation; the test split is for the final report only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hf_skin.export import compare_predictions, export_fp32, quantize, run_inputs, run_onnx
from hf_skin.inference import SkinClassifier
from hf_skin.processing import image_spec, pixel_grid
from hf_skin.quantization import (
    QAT_BATCH_SIZE,
    QAT_IMAGES,
    QAT_LEARNING_RATE,
    QAT_LOSS,
    QAT_LOSSES,
    quantization_aware_copy,
)
from hf_skin.runs import RunFolder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--learning_rates", default=f"{QAT_LEARNING_RATE:g}", help="comma-separated")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps between measurements")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=QAT_BATCH_SIZE)
    parser.add_argument("--fine_tune_images", type=int, default=QAT_IMAGES)
    parser.add_argument("--calibration_images", type=int, default=256)
    parser.add_argument("--losses", default=QAT_LOSS, help=f"comma-separated, of: {', '.join(QAT_LOSSES)}")
    parser.add_argument("--seeds", default="0", help="comma-separated: each repeats the sweep with its own seed")
    parser.add_argument(
        "--keep_rounded", action="store_true", help="measure the rounded weights themselves, as --int8_ready keeps"
    )
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    folder = RunFolder(args.run_dir).require_finished()
    splits = folder.splits()
    classifier = SkinClassifier.from_pretrained(args.run_dir)
    validation, labels = run_inputs(classifier, splits["validation"])
    calibration, _ = run_inputs(classifier, splits["train"], args.calibration_images, seed=1)
    training, _ = run_inputs(classifier, splits["train"], args.fine_tune_images, seed=2)
    results = []
    with tempfile.TemporaryDirectory(prefix="hf_skin_sweep_") as tmp:
        tmp = Path(tmp)
        original = export_fp32(classifier, tmp / "fp32.onnx")
        reference = run_onnx(original, validation)
        grid = pixel_grid(image_spec(classifier.image_processor))  # as export_onnx quantises the input

        def measure(fp32, **record):
            int8 = quantize(fp32, tmp / "int8.onnx", calibration, input_grid=grid)
            result = compare_predictions(reference, run_onnx(int8, validation), labels)
            result["differ"] = round(result["n"] * (1 - result["top1_agreement"]))
            results.append({**record, **result})
            print(json.dumps(results[-1]), flush=True)

        measure(original, steps=0, learning_rate=0.0, seconds=0.0)
        settings = [
            (float(rate), loss, int(seed))
            for rate in args.learning_rates.split(",")
            for loss in args.losses.split(",")
            for seed in args.seeds.split(",")
        ]
        for learning_rate, loss, seed in settings:
            student, seconds = classifier.model, 0.0
            for chunk in range(args.chunks):
                start = time.perf_counter()
                student = quantization_aware_copy(
                    student,
                    training,
                    steps=args.steps,
                    learning_rate=learning_rate,
                    batch_size=args.batch_size,
                    seed=seed * 1000 + chunk,  # seed 0: the draws of the sweeps before --seeds existed
                    teacher=classifier.model,
                    loss=loss,
                    keep_rounded=args.keep_rounded,
                )
                seconds += time.perf_counter() - start
                measure(
                    export_fp32(SkinClassifier(student, classifier.processor), tmp / "student.onnx"),
                    steps=args.steps * (chunk + 1),
                    learning_rate=learning_rate,
                    loss=loss,
                    seed=seed,
                    seconds=seconds,
                )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
