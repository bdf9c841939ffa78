import copy
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


def test_the_torch_free_study_cnn_record_is_the_configs_defaults():
    from hf_skin.families import STUDY_CNN

    defaults = SkinCNNConfig().to_dict()
    assert {key: defaults[key] for key in STUDY_CNN} == STUDY_CNN


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


# ---- the CNN's base model speaks transformers' vision outputs; old checkpoints load to the same numbers ----

from transformers import AutoModel, Trainer, TrainingArguments  # noqa: E402
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention  # noqa: E402

from hf_skin.models import SkinCNNModel  # noqa: E402

BATCH_NORM_CNN = {"hidden_sizes": [4, 8], "convs_per_stage": 2, "normalization": "batch", "downsample": True}


@pytest.mark.parametrize("head", ["flatten", "avg"])
def test_cnn_base_model_returns_its_feature_map_and_pooled_features(head):
    model = build_model("cnn", **BATCH_NORM_CNN, head=head).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.cnn(x, output_hidden_states=True)
        feature_map = model.cnn.encoder(x)  # the whole stack of layers, stage after stage
        logits = model(x).logits
    assert isinstance(out, BaseModelOutputWithPoolingAndNoAttention)
    assert out.last_hidden_state.shape == (2, 8, 8, 8)  # (B, hidden_sizes[-1], 32 / 2 / 2, 32 / 2 / 2)
    torch.testing.assert_close(out.last_hidden_state, feature_map, rtol=0, atol=0)
    pooled = feature_map.mean(dim=(2, 3)) if head == "avg" else feature_map.flatten(1)
    torch.testing.assert_close(out.pooler_output, pooled, rtol=0, atol=0)
    assert out.pooler_output.shape == (2, model.cnn.num_features)
    torch.testing.assert_close(logits, model.classifier(out.pooler_output), rtol=0, atol=0)  # what the head takes
    assert [h.shape[1:] for h in out.hidden_states] == [(4, 16, 16), (8, 8, 8)]  # one per stage
    last_hidden_state, pooler_output = model.cnn(x, return_dict=False)
    assert torch.equal(last_hidden_state, out.last_hidden_state) and torch.equal(pooler_output, out.pooler_output)


def test_cnn_base_model_loads_through_auto_model(cnn_checkpoint):
    backbone = AutoModel.from_pretrained(cnn_checkpoint).eval()
    classifier = AutoModelForImageClassification.from_pretrained(cnn_checkpoint).eval()
    assert isinstance(backbone, SkinCNNModel)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x).pooler_output, classifier.cnn(x).pooler_output, rtol=0, atol=0)


def deterministic_weights(model: torch.nn.Module) -> None:
    """Every float weight and buffer set from its position alone (no RNG, so the same on any torch version)."""
    with torch.no_grad():
        for i, (name, tensor) in enumerate(model.state_dict().items()):
            if tensor.is_floating_point():
                values = 0.3 * torch.sin(0.7 * torch.arange(tensor.numel(), dtype=torch.float32) + i)
                tensor.copy_(values.reshape(tensor.shape) + (1.0 if name.endswith("running_var") else 0.0))


CNN_KEYS = ["cnn.encoder.0.weight", "cnn.encoder.0.bias", "cnn.encoder.3.weight", "cnn.encoder.3.bias"]
BN_KEYS = [
    f"cnn.encoder.{i}.{key}"
    for conv, norm in ((0, 1), (3, 4), (8, 9), (11, 12))
    for i, key in ((conv, "weight"), (conv, "bias"), *((norm, k) for k in ("weight", "bias", "running_mean")))
    + ((norm, "running_var"), (norm, "num_batches_tracked"))
]
MULTI_INPUT_KEYS = [key.replace("cnn.", "backbone.") for key in CNN_KEYS] + [
    "metadata_encoder.embeddings.sex.weight",
    "metadata_encoder.embeddings.localization.weight",
    "metadata_encoder.mlp.0.weight",
    "metadata_encoder.mlp.0.bias",
    "fusion.1.weight",
    "fusion.1.bias",
]
# State-dict keys and logits as the code before `SkinCNNModel` returned a ModelOutput gave them (weights from
# `deterministic_weights`, the input below): checkpoints saved by it must load, and predict, unchanged.
BEFORE_THE_MODEL_OUTPUT = {
    "cnn": (
        {"hidden_sizes": [4, 8], "image_size": 16},
        CNN_KEYS,
        [
            [-2.7182, 0.08289, 2.71994, 2.71766, 0.17121, -2.39073, -2.49567],
            [-2.00677, -0.77555, 1.13076, 1.94852, 0.97493, -0.80209, -1.67266],
        ],
    ),
    "cnn-batch-norm": (
        {**BATCH_NORM_CNN, "image_size": 16, "head": "avg"},
        BN_KEYS,
        [
            [-0.33128, -0.5179, -0.46569, -0.19897, 0.15905, 0.44327, 0.52284],
            [-0.33084, -0.51658, -0.46407, -0.19779, 0.15927, 0.44243, 0.52131],
        ],
    ),
    "multi-input": (
        {"hidden_sizes": [4, 8], "image_size": 16, "fusion_hidden_size": 8},
        MULTI_INPUT_KEYS,
        [
            [-0.54423, -0.72083, -0.56896, -0.16064, 0.31652, 0.64552, 0.67876],
            [-0.48016, -0.67551, -0.56274, -0.19631, 0.25496, 0.58572, 0.64755],
        ],
    ),
}


@pytest.mark.parametrize("case", BEFORE_THE_MODEL_OUTPUT)
def test_state_dict_keys_and_logits_are_those_of_checkpoints_saved_before(case, tmp_path):
    config_overrides, keys, logits = BEFORE_THE_MODEL_OUTPUT[case]
    family = case.removesuffix("-batch-norm")
    model = build_model(family, **config_overrides)
    assert [key for key in model.state_dict() if not key.startswith("classifier.")] == keys
    deterministic_weights(model)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.cos(0.011 * torch.arange(2 * 3 * 16 * 16, dtype=torch.float32) ** 1.3).reshape(2, 3, 16, 16)
    metadata = {"age": torch.tensor([0.3, -1.0]), "age_missing": torch.tensor([0.0, 1.0])}
    metadata.update(sex=torch.tensor([0, 1]), localization=torch.tensor([2, 5]))
    metadata = metadata if family == "multi-input" else {}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x, **metadata).logits, torch.tensor(logits), rtol=0, atol=2e-5)


# ---- gradient checkpointing: the CNN's stages, and the multi-input model through its backbone ----


def first_conv(module: torch.nn.Module) -> torch.nn.Module:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))


# A model, and a module inside what gets checkpointed: it runs twice per step (forward, recomputation) when it is.
CHECKPOINTED = {
    "cnn": (lambda tiny: build_model("cnn", **BATCH_NORM_CNN), lambda m: m.cnn.encoder[0]),
    "multi-input-cnn": (lambda tiny: build_model("multi-input", **BATCH_NORM_CNN), lambda m: m.backbone.encoder[-3]),
    "multi-input-vit": (
        lambda tiny: build_model("multi-input", backbone="vit", model_name_or_path=tiny["vit"]),
        lambda m: m.backbone.layers[0].attention,
    ),
    "multi-input-timm": (
        lambda tiny: build_model("multi-input", backbone="efficientnet-lite0", model_name_or_path=tiny["timm"]),
        lambda m: first_conv(m.backbone.timm_model.blocks),
    ),
}


@pytest.fixture
def tiny(tiny_vit_checkpoint, tiny_timm_checkpoint):
    return {"vit": str(tiny_vit_checkpoint), "timm": str(tiny_timm_checkpoint)}


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("family", CHECKPOINTED)
def test_gradient_checkpointing_recomputes_and_takes_the_same_step(family, reentrant, tiny):
    make, checkpointed_module = CHECKPOINTED[family]
    torch.manual_seed(0)
    plain = make(tiny).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    runs = []
    for model in (plain, checkpointed):
        calls = []
        checkpointed_module(model).register_forward_hook(lambda *_, calls=calls: calls.append(None))
        torch.manual_seed(1)  # the same dropout masks
        x, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 6])
        metadata = metadata_batch() if family.startswith("multi-input") else {}
        model(x, labels=labels, **metadata).loss.backward()
        runs.append(len(calls))
    assert runs == [1, 2]  # the checkpointed layers ran again in the backward pass
    for (name, param), checkpointed_param in zip(plain.named_parameters(), checkpointed.parameters()):
        assert param.grad is not None, name
        torch.testing.assert_close(checkpointed_param.grad, param.grad, msg=name)
    if "timm" not in family:  # (timm's own checkpointing counts each batch twice in its batch norms)
        for (name, buffer), checkpointed_buffer in zip(plain.named_buffers(), checkpointed.buffers()):
            assert torch.equal(checkpointed_buffer, buffer), name  # batch norm saw each batch once

    checkpointed.gradient_checkpointing_disable()
    calls = []
    checkpointed_module(checkpointed).register_forward_hook(lambda *_: calls.append(None))
    checkpointed(x, labels=labels, **metadata).loss.backward()
    assert len(calls) == 1


@pytest.mark.parametrize("family", CHECKPOINTED)
def test_trainer_trains_with_the_gradient_checkpointing_flag(family, tiny, tmp_path):
    model = CHECKPOINTED[family][0](tiny)
    metadata = metadata_batch(2) if family.startswith("multi-input") else {}
    rows = [
        {"pixel_values": torch.randn(3, 32, 32), "labels": i, **{k: v[i] for k, v in metadata.items()}}
        for i in range(2)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path), gradient_checkpointing=True, max_steps=1, use_cpu=True, report_to="none"
    )
    Trainer(model=model, args=args, train_dataset=rows).train()  # raised "does not support activation checkpointing"
    backbone = backbone_of(model)
    if "timm" in family:  # timm's own switch
        assert backbone.timm_model.grad_checkpointing
    else:
        assert model.is_activation_checkpointing


def test_gradient_checkpointing_over_a_backbone_without_it_names_the_backbone(tiny_resnet_checkpoint):
    model = build_model("multi-input", backbone="resnet101", model_name_or_path=str(tiny_resnet_checkpoint))
    with pytest.raises(ValueError, match="ResNetModel backbone does not support it"):
        model.gradient_checkpointing_enable()
    model.gradient_checkpointing_disable()  # nothing to switch off, no error
