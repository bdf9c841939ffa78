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
