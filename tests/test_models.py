import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, pipeline

from hf_skin.data import DX_LABELS
from hf_skin.models import SkinCNNConfig, SkinCNNForImageClassification, build_model
from hf_skin.processing import build_image_processor


@pytest.fixture
def cnn_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn", hidden_sizes=[4, 8])
    model.save_pretrained(tmp_path)
    build_image_processor(model.config.image_size).save_pretrained(tmp_path)
    return tmp_path


def test_default_config_is_the_studys_network():
    model = build_model("cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    dropouts = [m.p for m in model.cnn.encoder if isinstance(m, torch.nn.Dropout)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 32, (3, 3)), (32, 64, (3, 3))]
    assert dropouts == [0.5, 0.5]
    assert model.classifier.in_features == 64 * 32 * 32 and model.classifier.out_features == 7
    assert model.config.id2label == dict(enumerate(DX_LABELS))
    assert model.config.label2id["mel"] == 4


def test_stronger_cnn_is_one_config_away():
    model = build_model(
        "cnn", image_size=64, hidden_sizes=[8, 16, 32], normalization="batch", downsample=True, head="avg"
    )
    out = model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 6]))
    assert out.logits.shape == (2, 7) and out.loss.ndim == 0
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.classifier.in_features == 32


@pytest.mark.parametrize("bad", [{"normalization": "layer"}, {"head": "max"}])
def test_bad_config_values_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SkinCNNConfig(**bad)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'resnet18'.*cnn"):
        build_model("resnet18")


def test_auto_classes_reload_identical_logits(cnn_checkpoint):
    assert AutoConfig.from_pretrained(cnn_checkpoint).model_type == "hf_skin_cnn"
    original = SkinCNNForImageClassification.from_pretrained(cnn_checkpoint).eval()
    reloaded = AutoModelForImageClassification.from_pretrained(cnn_checkpoint).eval()
    assert isinstance(reloaded, SkinCNNForImageClassification)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(original(x).logits, reloaded(x).logits, rtol=0, atol=0)
    assert (cnn_checkpoint / "model.safetensors").is_file()


def test_pipeline_on_saved_checkpoint_matches_model(cnn_checkpoint):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    classifier = pipeline("image-classification", model=str(cnn_checkpoint), top_k=7)
    scores = {row["label"]: row["score"] for row in classifier(image)}
    assert set(scores) == set(DX_LABELS)

    model = AutoModelForImageClassification.from_pretrained(cnn_checkpoint).eval()
    pixel_values = AutoImageProcessor.from_pretrained(cnn_checkpoint)(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32)
    with torch.no_grad():
        probs = model(pixel_values).logits.softmax(-1)[0]
    for i, label in enumerate(DX_LABELS):
        assert scores[label] == pytest.approx(probs[i].item(), abs=1e-5)


# ---- the pretrained families and multi-input fusion (offline, on tiny random checkpoints) ----

import subprocess  # noqa: E402
import sys  # noqa: E402

from conftest import REMOTE_LOAD  # noqa: E402
from transformers import ResNetForImageClassification  # noqa: E402

from hf_skin.models import SkinMultiInputForImageClassification, backbone_of, freeze_backbone  # noqa: E402


@pytest.fixture
def backbones(tiny_resnet_checkpoint, tiny_vit_checkpoint, tiny_timm_checkpoint):
    return {
        "cnn": None,
        "resnet101": str(tiny_resnet_checkpoint),
        "vit": str(tiny_vit_checkpoint),
        "efficientnet-lite0": str(tiny_timm_checkpoint),
    }


def metadata_batch(n=3):
    return {
        "age": torch.tensor([0.3, -1.0, 0.0])[:n],
        "age_missing": torch.tensor([0.0, 0.0, 1.0])[:n],
        "sex": torch.tensor([0, 1, 2])[:n],
        "localization": torch.tensor([2, 5, 14])[:n],
    }


def test_head_swap_keeps_the_pretrained_backbone(tiny_resnet_checkpoint, caplog):
    original = ResNetForImageClassification.from_pretrained(tiny_resnet_checkpoint)
    assert original.classifier[-1].out_features == 1000
    with caplog.at_level("INFO", logger="hf_skin.models"):
        model = build_model("resnet101", model_name_or_path=str(tiny_resnet_checkpoint))
    assert "head was replaced" in caplog.text
    assert model.classifier[-1].out_features == 7 and model.config.id2label == dict(enumerate(DX_LABELS))
    for (name, a), b in zip(original.resnet.state_dict().items(), model.resnet.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("family", ["resnet101", "vit", "efficientnet-lite0"])
def test_pretrained_family_saves_and_reloads(family, backbones, tmp_path):
    model = build_model(family, model_name_or_path=backbones[family]).eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model) and reloaded.config.num_labels == 7
    saved = model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # timm's convolutions may pick another kernel for the reloaded copy: 1e-9 apart
        torch.testing.assert_close(model(x).logits, reloaded(x).logits, rtol=0, atol=1e-7 if "lite" in family else 0)


def test_vit_dropout_override_reaches_the_config(tiny_vit_checkpoint):
    model = build_model("vit", model_name_or_path=str(tiny_vit_checkpoint), hidden_dropout_prob=0.2)
    assert model.config.hidden_dropout_prob == 0.2
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in model.modules())


@pytest.mark.parametrize("backbone", ["cnn", "resnet101", "vit", "efficientnet-lite0"])
def test_multi_input_over_each_backbone_reloads_identically(backbone, backbones, tmp_path):
    model = build_model("multi-input", backbone=backbone, model_name_or_path=backbones[backbone]).eval()
    if backbone != "cnn":
        # The backbone holds the checkpoint's weights, not a fresh initialisation.
        pretrained = AutoModelForImageClassification.from_pretrained(backbones[backbone])
        base = pretrained.base_model.state_dict()
        for name, tensor in model.backbone.state_dict().items():  # TimmWrapperModel's keys have timm_model.
            assert torch.equal(tensor, base[name.removeprefix("timm_model.")] if name not in base else base[name]), (
                name
            )
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, SkinMultiInputForImageClassification)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x, **metadata_batch()).logits
        torch.testing.assert_close(reloaded(x, **metadata_batch()).logits, expected, rtol=0, atol=0)
        # Metadata changes the prediction (the fusion is wired in), and omitted metadata means missing/unknown.
        assert not torch.allclose(model(x, **{**metadata_batch(), "sex": torch.tensor([1, 0, 0])}).logits, expected)
        unknown = {"age": torch.zeros(3), "age_missing": torch.ones(3), "sex": torch.full((3,), 2)}
        unknown["localization"] = torch.full((3,), 14)
        torch.testing.assert_close(model(x).logits, model(x, **unknown).logits)
    assert set(p.name for p in tmp_path.glob("*.safetensors")) == {"model.safetensors"}
    assert not list(tmp_path.glob("*.bin"))


def test_multi_input_options(caplog):
    film = build_model("multi-input", fusion="film", categorical_encoding="one_hot", hidden_sizes=[4, 8])
    assert film.backbone.config.hidden_sizes == [4, 8] and film.config.fusion == "film"
    assert film(torch.randn(2, 3, 32, 32), **metadata_batch(2)).logits.shape == (2, 7)
    with caplog.at_level("WARNING", logger="hf_skin.models"):
        leaky = build_model("multi-input", metadata_fields=["age", "sex", "localization", "dx_type"])
    assert "leaks the label" in caplog.text and "dx_type" in leaky.config.vocabularies
    no_age = build_model("multi-input", metadata_fields=["sex"])
    assert no_age(torch.randn(1, 3, 32, 32), sex=torch.tensor([1])).logits.shape == (1, 7)


def test_freeze_backbone(tiny_resnet_checkpoint):
    model = build_model("resnet101", model_name_or_path=str(tiny_resnet_checkpoint))
    before = {k: v.clone() for k, v in backbone_of(model).state_dict().items()}
    trainable = freeze_backbone(model)
    assert trainable == sum(p.numel() for p in model.classifier.parameters())
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        model(torch.randn(4, 3, 32, 32), labels=torch.tensor([0, 1, 2, 3])).loss.backward()
        optimizer.step()
    for name, tensor in backbone_of(model).state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("family", ["cnn", "multi-input"])
def test_checkpoint_loads_without_hf_skin(family, tmp_path):
    model = build_model(family, hidden_sizes=[4, 8]).eval()
    model.save_pretrained(tmp_path / "ckpt")
    config = (tmp_path / "ckpt" / "config.json").read_text()
    assert "auto_map" in config
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(tmp_path / "ckpt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).logits
    torch.testing.assert_close(torch.tensor(json.loads(result.stdout.strip().splitlines()[-1])), expected)
