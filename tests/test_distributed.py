"""Resuming, reporting and multi-process training: the run a user interrupts, watches, or spreads over processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_args
from transformers import TrainerCallback

from hf_skin.runs import RunFolder
from hf_skin.training import build_trainer, evaluate_split, parse_args

ROOT = Path(__file__).resolve().parents[1]


class StopAt(TrainerCallback):
    """Simulates an interruption right after step `step` (and its checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def test_resume_reaches_the_same_step_and_weights(synthetic_dir, tmp_path):
    # Oversampling on (the recipe's), dropout on, crossing an epoch boundary after the interruption. Augmentation is
    # off: accelerate prefetches one batch ahead, so the augmentation of the batch after a checkpoint draws from the
    # random state before the save in one run and after the restore in the other.
    extra = ["--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4", "--eval_strategy", "no"]
    extra += ["--augment", "none"]

    def trained(output_dir, stop=None, resume=None):
        trainer, splits = build_trainer(*parse_args(small_args(synthetic_dir, output_dir, *extra)))
        if stop:
            trainer.add_callback(StopAt(stop))
        trainer.train(resume_from_checkpoint=resume)
        return trainer, splits

    straight, splits = trained(tmp_path / "straight")
    interrupted, _ = trained(tmp_path / "resumed", stop=4)
    assert interrupted.state.global_step == 4
    resumed, _ = trained(tmp_path / "resumed", resume=str(tmp_path / "resumed" / "checkpoint-4"))
    assert resumed.state.global_step == straight.state.global_step == 8
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    a, _ = evaluate_split(straight, splits["test"], "test", tmp_path / "a")
    b, _ = evaluate_split(resumed, splits["test"], "test", tmp_path / "b")
    assert a["confusion_matrix"] == b["confusion_matrix"]


def test_report_to_tensorboard(synthetic_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    argv = small_args(synthetic_dir, tmp_path / "run", "--max_steps", "2", "--report_to", "tensorboard")
    argv += ["--logging_strategy", "steps", "--logging_steps", "1", "--eval_strategy", "no", "--save_strategy", "no"]
    trainer, _ = build_trainer(*parse_args(argv))
    trainer.train()
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 100


def test_two_process_run_evaluates_like_one_process(synthetic_dir, tmp_path):
    """Two processes score the test split with the saved model: the one --int8_ready made on the main process (its
    channels-last weights broadcast to the other), as one process scoring the saved checkpoint does."""
    out = tmp_path / "ddp"
    argv = small_args(synthetic_dir, out, "--max_steps", "3", "--per_device_train_batch_size", "8")
    argv += ["--eval_strategy", "no", "--save_strategy", "no", "--per_device_eval_batch_size", "7"]
    argv += ["--int8_ready", "--channels_last"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1"]
    # accelerate's --cpu runs ONE process whatever --num_processes says (its simple launcher); --multi_gpu goes through
    # torchrun, and --use_cpu makes each process train on the CPU (gloo). Before, this test passed on one process.
    launcher += [
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "scripts" / "finetune.py"),
    ]
    argv += ["--use_cpu"]
    result = subprocess.run([*launcher, *argv], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    # Two processes, not one that silently ran alone: the run records the world size its processes trained with.
    assert RunFolder(out).state["world_size"] == 2
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["train_batch_size"] == 8

    distributed = json.loads((out / "test_metrics.json").read_text())
    # The same checkpoint evaluated by a single process: identical counts, no padded duplicates.
    single_args = small_args(synthetic_dir, tmp_path / "single", "--eval_strategy", "no")
    trainer, splits = build_trainer(*parse_args(single_args))
    from transformers import AutoModelForImageClassification

    trainer.model = AutoModelForImageClassification.from_pretrained(out)
    single, _ = evaluate_split(trainer, splits["test"], "test", tmp_path / "single")
    assert np.asarray(distributed["confusion_matrix"]).sum() == len(splits["test"])
    assert distributed["confusion_matrix"] == single["confusion_matrix"]
    assert distributed["balanced_accuracy"] == pytest.approx(single["balanced_accuracy"])
    # to 1e-7: without the broadcast, the int8-ready step (on the main process only) moved it by 2e-6 here
    assert distributed["nll"] == pytest.approx(single["nll"], rel=1e-7)
