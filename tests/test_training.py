import json
import sys

import numpy as np
import pytest
import torch
from conftest import load_script, small_args
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline

from hf_skin.data import DX_LABELS
from hf_skin.inference import SkinClassifier
from hf_skin.training import RECIPES, SkinTrainer, build_augmentation, build_trainer, parse_args


def test_recipe_defaults_and_overrides():
    _, _, args = parse_args(["--model", "cnn", "--dataset", "x"])
    assert args.per_device_train_batch_size == 34 and args.num_train_epochs == 150
    assert args.balance == "oversample" and args.step_decay_epochs == 50 and args.output_dir == "runs/cnn"
    assert args.metric_for_best_model == "balanced_accuracy" and args.load_best_model_at_end
    _, _, args = parse_args(["--model", "cnn", "--dataset", "x", "--num_train_epochs", "3", "--balance", "none"])
    assert args.num_train_epochs == 3 and args.balance == "none" and args.per_device_train_batch_size == 34


def test_arguments_from_a_json_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(
        json.dumps({"model": "cnn", "dataset": "d", "learning_rate": 0.01, "config_overrides": {"image_size": 64}})
    )
    model_args, data_args, args = parse_args([str(path)])
    assert (
        args.learning_rate == 0.01
        and args.per_device_train_batch_size == RECIPES["cnn"]["per_device_train_batch_size"]
    )
    assert model_args.config_overrides == {"image_size": 64} and data_args.dataset == "d"
    # Flags after the file replace its values; the file's replace the recipe's.
    model_args, data_args, args = parse_args([str(path), "--dataset", "other", "--num_train_epochs", "2"])
    assert data_args.dataset == "other" and args.num_train_epochs == 2 and args.learning_rate == 0.01
    assert model_args.config_overrides == {"image_size": 64} and args.output_dir == "runs/cnn"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        parse_args([str(tmp_path / "missing.json")])
    path.write_text(json.dumps({"model": "cnn", "learning_rte": 0.01}))
    with pytest.raises(ValueError, match="learning_rte"):
        parse_args([str(path)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--balance", "smote"], "invalid choice: 'smote'"),
        (["--config_overrides", "{hidden"], "not valid JSON"),
        (["--image_size", "150y200"], "not a side or HEIGHTxWIDTH"),  # named at parse time, before a model loads
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises((SystemExit, ValueError)) as err:
        parse_args(["--dataset", "x", *argv])
    assert message in str(err.value) + capsys.readouterr().err


def test_image_size_is_parsed_once_and_recorded_as_given():
    from hf_skin.training import run_args

    model_args, data_args, args = parse_args(["--model", "resnet101", "--dataset", "x", "--image_size", "150x200"])
    assert model_args.parsed_image_size == (150, 200)
    # run_args.json keeps the flag as written, so that parse_args reads a run's arguments back unchanged
    saved = run_args(model_args, data_args, args)
    assert saved["image_size"] == "150x200" and "parsed_image_size" not in saved
    assert parse_args(["--model", "cnn", "--dataset", "x"])[0].parsed_image_size is None


def test_paper_augmentation_keeps_size_and_mode_and_changes_pixels():
    torch.manual_seed(0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (38, 50, 3), dtype=np.uint8))
    for name in ("paper", "strong"):
        out = build_augmentation(name)(image)
        assert out.size == image.size and out.mode == "RGB"
        assert not np.array_equal(np.asarray(out), np.asarray(image))
    assert build_augmentation("none") is None


def _trainer(synthetic_dir, tmp_path, *extra):
    model_args, data_args, args = parse_args([*small_args(synthetic_dir, tmp_path), "--max_steps", "2", *extra])
    return build_trainer(model_args, data_args, args)


def test_oversampling_draws_classes_evenly(synthetic_dir, tmp_path):
    trainer, _ = _trainer(synthetic_dir, tmp_path, "--balance", "oversample")
    sampler = trainer._get_train_sampler()
    epochs = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    sampler.set_epoch(3)
    assert list(sampler) == epochs[3] and epochs[0] != epochs[1]  # a function of (seed, epoch) alone
    drawn = trainer.train_labels[np.concatenate(epochs)]
    share = np.bincount(drawn, minlength=7) / len(drawn)
    natural = np.bincount(trainer.train_labels, minlength=7) / len(trainer.train_labels)
    assert natural[DX_LABELS.index("nv")] > 0.4  # the synthetic set is nv-heavy like HAM10000...
    assert np.all(np.abs(share - 1 / 7) < 0.04)  # ...but the sampler sees every class about equally often


def test_class_weights_are_inverse_frequency(synthetic_dir, tmp_path):
    trainer, _ = _trainer(synthetic_dir, tmp_path, "--balance", "class_weights")
    counts = np.bincount(trainer.train_labels, minlength=7)
    weights = trainer.class_weights.numpy()
    np.testing.assert_allclose(weights * counts, np.full(7, len(trainer.train_labels) / 7), rtol=1e-6)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()  # no dropout: both forwards must see the same network
    loss = trainer.compute_loss(trainer.model, dict(batch))
    logits = trainer.model(pixel_values=batch["pixel_values"]).logits
    weighted = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=trainer.class_weights.float())
    assert loss.item() == pytest.approx(weighted.item(), rel=1e-4)


def test_balance_power_softens_the_weights():
    from hf_skin.training import class_balance_weights

    labels = np.array([0] * 90 + [1] * 10)
    full = class_balance_weights(labels, 3, 1.0)
    np.testing.assert_allclose(full, [100 / (2 * 90), 100 / (2 * 10), 0.0])  # N / (K n_c); absent class: 0
    root = class_balance_weights(labels, 3, 0.5)
    assert root[1] / root[0] == pytest.approx(3.0)  # sqrt(90 / 10)
    assert (root[:2] * [90, 10]).sum() == pytest.approx(100)  # the average example still weighs 1
    np.testing.assert_allclose(class_balance_weights(labels, 3, 0.0), [1, 1, 0])


def test_step_decay_schedule(synthetic_dir, tmp_path):
    trainer, _ = _trainer(synthetic_dir, tmp_path, "--step_decay_epochs", "1", "--step_decay_gamma", "0.1")
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(100)
    per_epoch = len(trainer.get_train_dataloader())
    lrs = []
    for _ in range(2 * per_epoch + 1):
        lrs.append(scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        scheduler.step()
    lr = trainer.args.learning_rate
    assert lrs[0] == pytest.approx(lr) and lrs[per_epoch] == pytest.approx(lr * 0.1)
    assert lrs[2 * per_epoch] == pytest.approx(lr * 0.01)
    assert isinstance(trainer, SkinTrainer)


def test_step_decay_zero_hands_over_to_the_trainer_schedule(synthetic_dir, tmp_path):
    trainer, _ = _trainer(synthetic_dir, tmp_path, "--step_decay_epochs", "0", "--lr_scheduler_type", "cosine")
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(100)
    for _ in range(50):
        trainer.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(trainer.args.learning_rate * 0.5, rel=0.05)  # cosine midpoint


def test_scoring_the_training_sample_does_not_change_the_training(synthetic_dir, tmp_path):
    weights = []
    for samples in ("0", "1000"):
        argv = [*small_args(synthetic_dir, tmp_path / samples), "--num_train_epochs", "2", "--save_strategy", "no"]
        model_args, data_args, args = parse_args([*argv, "--load_best_model_at_end", "false"])
        args.train_metrics_samples = int(samples)
        trainer, _ = build_trainer(model_args, data_args, args)
        trainer.train()
        logged = [e for e in trainer.state.log_history if "train_sample_accuracy" in e]
        assert len(logged) == (2 if samples == "1000" else 0)
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=0, atol=0, msg=name)


def test_finetune_main_trains_evaluates_and_saves(synthetic_dir, tmp_path, monkeypatch):
    finetune = load_script("finetune")

    out = tmp_path / "run"
    argv = [*small_args(synthetic_dir, out), "--num_train_epochs", "2", "--per_device_train_batch_size", "16"]
    monkeypatch.setattr(sys, "argv", ["finetune.py", *argv])
    returned = finetune.main()

    results = json.loads((out / "all_results.json").read_text())
    for key in ("train_loss", "validation_balanced_accuracy", "test_accuracy", "test_f1_macro", "test_recall_mel"):
        assert key in results
    assert results["test_accuracy"] == pytest.approx(returned["test_accuracy"])
    test_metrics = json.loads((out / "test_metrics.json").read_text())
    cm = np.asarray(test_metrics["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.trace() / cm.sum() == pytest.approx(results["test_accuracy"])
    assert test_metrics["per_class"]["mel"]["support"] == cm[DX_LABELS.index("mel")].sum()
    for png in ("test_confusion_matrix.png", "test_confusion_matrix_normalized.png"):
        assert (out / png).stat().st_size > 10_000
    # The best checkpoint by validation balanced accuracy was kept and saved with its processor.
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(
        max(e["eval_balanced_accuracy"] for e in state["log_history"] if "eval_balanced_accuracy" in e)
    )
    # Each evaluation also scored the fixed training sample: the train curve of the study's figure.
    train_curve = [e for e in state["log_history"] if "train_sample_balanced_accuracy" in e]
    assert [e["epoch"] for e in train_curve] == [1.0, 2.0]
    assert all(0 <= e["train_sample_accuracy"] <= 1 and "train_sample_loss" in e for e in train_curve)
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.id2label == dict(enumerate(DX_LABELS))
    image = next((synthetic_dir / "HAM10000_images_part_1").glob("*.jpg"))
    predictions = pipeline("image-classification", model=str(out), top_k=7)(str(image))
    assert sorted(p["label"] for p in predictions) == sorted(DX_LABELS)
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)


FAMILIES = {
    "cnn": [],
    "multi-input": [],
    "resnet101": ["--model_name_or_path", "{resnet}"],
    "vit": ["--model_name_or_path", "{vit}"],
    # timm (TimmWrapper) at a 4:3 input size of the recipe's choosing
    "efficientnet-lite0": ["--model_name_or_path", "{timm}", "--image_size", "24x32"],
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_learns_a_fixed_batch_through_finetune_main(
    family, synthetic_dir, tmp_path, monkeypatch, tiny_resnet_checkpoint, tiny_vit_checkpoint, tiny_timm_checkpoint
):
    finetune = load_script("finetune")

    tiny = {"resnet": tiny_resnet_checkpoint, "vit": tiny_vit_checkpoint, "timm": tiny_timm_checkpoint}
    extra = [a.format(**tiny) for a in FAMILIES[family]]
    if family in ("cnn", "multi-input"):
        extra += ["--config_overrides", '{"hidden_sizes": [8, 16], "dropout": 0.0}']
    out = tmp_path / family
    # 16 training images, one batch of 16, no augmentation or resampling: every step sees the same batch.
    argv = ["--model", family, "--dataset", str(synthetic_dir), "--output_dir", str(out), *extra]
    argv += ["--max_train_samples", "16", "--per_device_train_batch_size", "16", "--max_eval_samples", "8"]
    argv += ["--augment", "none", "--balance", "none", "--max_steps", "12", "--learning_rate", "3e-3"]
    argv += ["--step_decay_epochs", "0", "--warmup_steps", "0", "--lr_scheduler_type", "constant"]
    argv += ["--eval_strategy", "no", "--logging_strategy", "steps", "--logging_steps", "1", "--save_strategy", "no"]
    monkeypatch.setattr(sys, "argv", ["finetune.py", *argv])
    finetune.main()

    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]) and losses[-1] < losses[0], losses
    results = json.loads((out / "all_results.json").read_text())
    assert "test_balanced_accuracy" in results
    assert AutoModelForImageClassification.from_pretrained(out).config.id2label == dict(enumerate(DX_LABELS))
    # The saved run serves: pipeline() for image-only families, the predict API for all of them.
    image = str(next((synthetic_dir / "HAM10000_images_part_1").glob("*.jpg")))
    [probs] = SkinClassifier.from_pretrained(out).predict(image, age="50", sex="male", localization="back")
    assert sorted(probs) == sorted(DX_LABELS) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    if family != "multi-input":
        piped = {p["label"]: p["score"] for p in pipeline("image-classification", model=str(out), top_k=7)(image)}
        assert piped == pytest.approx(probs, abs=1e-5)


def test_backbone_learning_rate_multiplier(synthetic_dir, tmp_path, tiny_resnet_checkpoint):
    trainer, _ = _trainer(
        synthetic_dir,
        tmp_path,
        "--model",
        "resnet101",
        "--model_name_or_path",
        str(tiny_resnet_checkpoint),
        "--config_overrides",
        "{}",
        "--backbone_learning_rate_multiplier",
        "0.1",
        "--learning_rate",
        "1e-3",
    )
    optimizer = trainer.create_optimizer()
    backbone = {id(p) for p in trainer.model.resnet.parameters()}
    for group in optimizer.param_groups:
        in_backbone = {id(p) in backbone for p in group["params"]}
        assert len(in_backbone) == 1  # a group is all backbone or all head
        assert group["lr"] == pytest.approx(1e-4 if in_backbone.pop() else 1e-3)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(trainer.model.parameters()))


def test_frozen_backbone_through_the_trainer(synthetic_dir, tmp_path, tiny_resnet_checkpoint):
    from transformers import ResNetForImageClassification

    model_args, data_args, args = parse_args(
        [
            *small_args(synthetic_dir, tmp_path / "frozen"),
            "--model",
            "resnet101",
            "--model_name_or_path",
            str(tiny_resnet_checkpoint),
            "--config_overrides",
            "{}",
            "--freeze_backbone",
            "--max_steps",
            "2",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
        ]
    )
    trainer, _ = build_trainer(model_args, data_args, args)
    head_before = trainer.model.classifier[-1].weight.clone()
    trainer.train()
    original = ResNetForImageClassification.from_pretrained(tiny_resnet_checkpoint).resnet.state_dict()
    for name, tensor in trainer.model.resnet.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    assert not torch.equal(trainer.model.classifier[-1].weight, head_before)


def test_oversampling_gives_each_process_its_own_shard():
    from accelerate.data_loader import prepare_data_loader

    from hf_skin.training import BalancedSampler

    labels = np.array([5] * 40 + [0] * 4 + [3] * 2 + [6] * 6)
    for epoch in (0, 1):
        sampler = BalancedSampler(labels, seed=7)
        sampler.set_epoch(epoch)
        single = list(sampler)
        batches = [single[i : i + 4] for i in range(0, len(single), 4)]
        shards = []
        for rank in (0, 1):
            loader = torch.utils.data.DataLoader(
                list(range(len(labels))), batch_size=4, sampler=BalancedSampler(labels, 7)
            )
            loader = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
            loader.set_epoch(epoch)
            shards.append([batch.tolist() for batch in loader])
        # 13 batches: process 0 takes batches 0, 2, ..., 12; process 1 takes 1, 3, ..., 11 and (to stay even)
        # wraps around to the start of the draw once.
        assert shards[0] == batches[0::2]
        assert shards[1][:6] == batches[1::2]
        assert not set(map(tuple, shards[0])) & set(map(tuple, shards[1][:6]))


def test_small_input_images_are_downsized_once_and_cached(synthetic_dir, tmp_path):
    from hf_skin.processing import load_image
    from hf_skin.training import DataArguments, load_splits, shrink_images

    splits = load_splits(DataArguments(dataset=str(synthetic_dir)), ["image", "dx"])
    small = shrink_images(splits, 64)
    for name in splits:
        assert small[name]["dx"] == splits[name]["dx"]
        image = load_image(small[name][0]["image"])
        if name == "train":
            assert min(image.size) == 64 and image.size[0] / image.size[1] == pytest.approx(200 / 150, rel=0.02)
        else:  # scored as serving sees them: the images as they are (one pixel path)
            assert image.size == (200, 150) and small[name][0]["image"] == splits[name][0]["image"]
    # A second run reuses the cache files datasets wrote, rather than decoding again.
    again = shrink_images(load_splits(DataArguments(dataset=str(synthetic_dir)), ["image", "dx"]), 64)
    assert again["train"].cache_files == small["train"].cache_files


def test_training_is_reproducible_from_the_seed(synthetic_dir, tmp_path):
    results = []
    for run in ("a", "b"):
        model_args, data_args, args = parse_args(
            [*small_args(synthetic_dir, tmp_path / run), "--max_steps", "3", "--eval_strategy", "no", "--seed", "3"]
        )
        trainer, _ = build_trainer(model_args, data_args, args)
        trainer.train()
        results.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bf16_cpu_training_step_for_each_family(
    family, synthetic_dir, tmp_path, tiny_resnet_checkpoint, tiny_vit_checkpoint, tiny_timm_checkpoint
):
    """--bf16 alone on a CPU-only machine trains under bf16 autocast (the Trainer itself refuses it without
    --use_cpu); weights stay fp32, and the final evaluation runs in fp32, as serving does."""
    from safetensors import safe_open

    from hf_skin.training import run

    tiny = {"resnet": tiny_resnet_checkpoint, "vit": tiny_vit_checkpoint, "timm": tiny_timm_checkpoint}
    extra = [a.format(**tiny) for a in FAMILIES[family]]
    if family in ("cnn", "multi-input"):
        extra += ["--config_overrides", '{"hidden_sizes": [8, 16]}']
    out = tmp_path / "run"
    argv = ["--model", family, "--dataset", str(synthetic_dir), "--output_dir", str(out), *extra, "--bf16"]
    argv += ["--channels_last"] * (family != "vit")
    argv += ["--max_steps", "2", "--per_device_train_batch_size", "8", "--max_train_samples", "16"]
    argv += ["--max_eval_samples", "16", "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1"]
    argv += ["--logging_strategy", "steps"]
    model_args, data_args, args = parse_args(argv)
    assert args.bf16 and args.use_cpu
    trainer, splits = build_trainer(model_args, data_args, args)
    assert trainer.accelerator.mixed_precision == "bf16"
    # Under the Trainer's autocast the layers compute in bf16 (the logits handed back are fp32); after
    # mixed_precision_off, as for the final evaluation, in fp32.
    head = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen = []
    hook = head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        assert trainer.accelerator.prepare_model(trainer.model)(**batch).logits.dtype == torch.float32
        trainer.mixed_precision_off()
        trainer.model(**batch)
    hook.remove()
    assert seen == [torch.bfloat16, torch.float32]

    results = run(*parse_args(argv))
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(np.isfinite(losses))
    with safe_open(out / "model.safetensors", framework="pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}
    assert torch.bfloat16 not in dtypes and torch.float32 in dtypes
    # The final evaluation is fp32: the saved checkpoint scored in fp32 gives the same test confusion matrix.
    from sklearn.metrics import confusion_matrix

    reloaded = AutoModelForImageClassification.from_pretrained(out).eval()
    test = splits["test"][:]
    labels = test.pop("labels")
    with torch.no_grad():
        predicted = reloaded(**test).logits.argmax(-1)
    got = confusion_matrix(labels, predicted, labels=range(7)).tolist()
    assert got == json.loads((out / "test_metrics.json").read_text())["confusion_matrix"]
    assert 0 <= results["test_balanced_accuracy"] <= 1


def test_an_image_damaged_mid_file_is_named_before_training(synthetic_dir, tmp_path):
    # A PNG whose compressed pixels are damaged but whose header and end marker are intact passes the load-time
    # check; before, the run died mid-epoch inside the DataLoader. Now it is named before the first step.
    import shutil
    import zlib

    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    victim = sorted(data.rglob("SYN_IMG_*.jpg"))[0]  # hf_skin.synthetic.IMAGE_PREFIX
    buffer = __import__("io").BytesIO()
    Image.open(victim).convert("RGB").save(buffer, format="PNG")
    png = bytearray(buffer.getvalue())
    start = png.index(b"IDAT") + 4
    png[start + 10 : start + 200] = bytes(190)  # zeroed deflate data: the header parses, decoding fails
    with pytest.raises(zlib.error):
        zlib.decompress(bytes(png[start : start + 400]))
    victim.unlink()
    victim.with_suffix(".png").write_bytes(bytes(png))
    argv = small_args(data, tmp_path / "run", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no")
    with pytest.raises(ValueError, match=rf"image_id {victim.stem}\).*cannot be decoded.*on_missing='skip'"):
        build_trainer(*parse_args(argv))
    trainer, splits = build_trainer(*parse_args([*argv, "--on_missing", "skip"]))
    assert trainer.train().global_step == 1


def test_int8_ready_training_leaves_int8_weights_and_scores_that_model(
    synthetic_dir, tiny_timm_checkpoint, tmp_path, monkeypatch
):
    """--int8_ready, on a multi-input model over a (tiny) EfficientNet normalising with mean 0.5: the saved model's
    weights are the numbers onnxruntime's int8 model stores (rounding them again changes nothing: every layer's, its
    BatchNorm folded in, and the metadata embedding tables), its processor's mean is a whole pixel value (128/255:
    8-bit pixels exact in int8) and the copy learned on the inputs that processor makes, its config says how it was
    made, and the run's test metrics are this model's."""
    import datasets

    from hf_skin.training import trainer as trainer_module

    learned_on = []

    def recording_copy(model, batches, **kwargs):
        learned_on.extend(batches)
        return copy_of(model, batches, **kwargs)

    copy_of = trainer_module.quantization_aware_copy
    monkeypatch.setattr(trainer_module, "quantization_aware_copy", recording_copy)
    from sklearn.metrics import confusion_matrix
    from transformers import AutoImageProcessor

    from hf_skin.processing import SkinProcessor, image_spec, make_batch_transform, pixel_grid
    from hf_skin.quantization import QAT_STEPS, _fold_of, _norm_after, int8_weight, uint8_table
    from hf_skin.training import run

    out = tmp_path / "run"
    argv = ["--model", "multi-input", "--dataset", str(synthetic_dir), "--output_dir", str(out), "--int8_ready"]
    argv += ["--backbone", "efficientnet-lite0", "--model_name_or_path", str(tiny_timm_checkpoint)]
    argv += ["--image_size", "24x32", "--max_steps", "2"]
    argv += ["--per_device_train_batch_size", "8", "--max_train_samples", "48", "--max_eval_samples", "32"]
    argv += ["--eval_strategy", "no", "--save_strategy", "no"]
    run(*parse_args(argv))
    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert model.config.int8_ready["steps"] == QAT_STEPS and model.config.int8_ready["training_images"] == 48
    assert model.config.int8_ready["image_mean_before"] == [0.5, 0.5, 0.5]
    saved = AutoImageProcessor.from_pretrained(out)
    assert saved.image_mean == pytest.approx([128 / 255] * 3) and pixel_grid(image_spec(saved)) == (
        pytest.approx(2 / 255),
        128,
    )
    assert model.config.backbone_config.pretrained_cfg["mean"] == pytest.approx([128 / 255] * 3)  # timm's copy of it
    trainer, splits = build_trainer(*parse_args(argv))
    features = splits["test"].features
    names = {name: f.names for name, f in features.items() if isinstance(f, datasets.ClassLabel)}
    saved_transform = make_batch_transform(SkinProcessor.from_pretrained(out), None, names)
    # the copy learned on the sample's images as the saved processor makes them (not half a pixel level off)
    trainer.int8_ready_sample.set_transform(saved_transform)
    sample = trainer.int8_ready_sample[:]
    assert len(learned_on) == 1 and len(sample["pixel_values"]) == 48  # one batch of 64 or fewer
    for name, value in learned_on[0].items():
        np.testing.assert_allclose(value, sample[name].numpy(), atol=1e-6, err_msg=name)
    splits["test"].set_transform(saved_transform)  # the saved processor
    test = splits["test"][:]
    labels = test.pop("labels")
    layers = _norm_after(model, {name: value[:2] for name, value in test.items()})
    assert sum(norm is not None for norm in layers.values()) >= 2  # convolutions with a BatchNorm folded in
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert tables
    with torch.no_grad():
        for layer, norm in layers.items():
            rounded = int8_weight(layer.weight, _fold_of(norm, layer.weight))
            torch.testing.assert_close(rounded, layer.weight, rtol=1e-6, atol=1e-7)
        for table in tables:
            torch.testing.assert_close(uint8_table(table.weight), table.weight, rtol=1e-6, atol=1e-7)
        logits = model(**test).logits
    metrics = json.loads((out / "test_metrics.json").read_text())
    got = confusion_matrix(labels, logits.argmax(-1), labels=range(7)).tolist()
    assert got == metrics["confusion_matrix"]
    # ... to the last digit: the NLL moves with any change of the weights, where the decisions of a barely trained
    # model may not; and the calibration was fitted after the step, on this model (it keeps the weights int8: above)
    nll = torch.nn.functional.cross_entropy(logits.double(), labels).item()
    assert metrics["nll"] == pytest.approx(nll, rel=1e-5)
    assert model.config.calibration is not None and model.config.calibration["temperature"] != 1.0
    # the card says so
    from hf_skin.model_card import model_card

    text = model_card(out).text
    assert "**int8-ready.** After training, a copy of the model learned its logits through onnxruntime's int8 " in text
    assert f"({QAT_STEPS} steps on 48 training images, learning rate 2e-06)" in text
    assert "8-bit pixels are int8 numbers too (its normalisation mean was rounded from 0.5, 0.5, 0.5 to a" in text
