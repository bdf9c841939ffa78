import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ConvNextImageProcessor

from hf_skin.data import DX_LABELS
from hf_skin.explain import ATTENTION_ROLLOUT, GRAD_CAM, _feature_map_layer, explain
from hf_skin.inference import SkinClassifier
from hf_skin.models import SkinCNNConfig, SkinCNNForImageClassification, backbone_of, build_model, label_maps
from hf_skin.models import load_pretrained_classifier as pretrained
from hf_skin.processing import build_image_processor, processor_for


def red_detector() -> SkinCNNForImageClassification:
    """A CNN whose melanoma score is the mean of one ReLU channel that fires on red pixels only: its Grad-CAM for
    melanoma must light up exactly where the image is red."""
    config = SkinCNNConfig(hidden_sizes=[2], dropout=0.0, head="avg", **label_maps())
    model = SkinCNNForImageClassification(config).eval()
    with torch.no_grad():
        conv, classifier = model.cnn.encoder[0], model.classifier
        for tensor in (conv.weight, conv.bias, classifier.weight, classifier.bias):
            tensor.zero_()
        conv.weight[0, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])  # normalised R - G - B: > 0 on red only
        classifier.weight[DX_LABELS.index("mel"), 0] = 1.0
    return model


def skin_with_red_square(box: tuple[int, int, int, int], size=(300, 200)) -> Image.Image:
    pixels = np.full((size[1], size[0], 3), (170, 150, 140), dtype=np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = (230, 20, 20)
    return Image.fromarray(pixels)


def test_grad_cam_lights_up_the_evidence_where_it_is_in_the_photo():
    classifier = SkinClassifier(red_detector(), build_image_processor(32))  # resizes the whole photo
    box = (30, 40, 120, 120)
    explanation = explain(classifier, skin_with_red_square(box), target="mel")
    assert (explanation.method, explanation.target) == (GRAD_CAM, "mel")
    assert explanation.heatmap.shape == (200, 300) and explanation.overlay.size == (300, 200)
    inside = explanation.heatmap[box[1] + 10 : box[3] - 10, box[0] + 10 : box[2] - 10]
    outside = explanation.heatmap.copy()
    outside[box[1] - 10 : box[3] + 10, box[0] - 10 : box[2] + 10] = 0
    assert inside.min() > 0.5 and outside.max() < 0.05
    assert "Melanoma (mel)" in explanation.caption
    # The overlay is the photo, coloured where the map is high (JET: red) and left blue-ish where it is low.
    overlay = np.asarray(explanation.overlay, dtype=float)
    assert overlay[80, 75, 0] > overlay[80, 75, 2] and overlay[150, 250, 2] > overlay[150, 250, 0]


def test_heatmap_follows_a_centre_crop_processor():
    """ResNet's processor (ConvNeXt's, 224 / 0.875) shows the model only the centre of the photo: the map must sit on
    that centre, zero outside it, and the overlay outlines it."""
    processor = ConvNextImageProcessor(size={"shortest_edge": 32})
    classifier = SkinClassifier(red_detector(), processor)
    box = (135, 85, 165, 115)  # the centre of 300 × 200
    explanation = explain(classifier, skin_with_red_square(box), target="mel")
    seen = round(200 * 0.875)  # a 175-pixel centre square
    left, top = (300 - seen) // 2, (200 - seen) // 2
    assert explanation.heatmap[:, : left - 1].max() == 0 and explanation.heatmap[:, left + seen + 1 :].max() == 0
    assert explanation.heatmap[100, 150] > 0.5 and explanation.heatmap[top + 5, left + 5] < 0.05
    assert tuple(np.asarray(explanation.overlay)[100, left]) == (255, 255, 255)  # the outline of the part it sees


FAMILIES = {
    "cnn": (lambda tiny: build_model("cnn", hidden_sizes=[4, 8]), GRAD_CAM),
    "resnet": (lambda tiny: pretrained(str(tiny["resnet"])), GRAD_CAM),
    "vit": (lambda tiny: pretrained(str(tiny["vit"])), ATTENTION_ROLLOUT),
    "multi-input-cnn": (lambda tiny: build_model("multi-input", hidden_sizes=[4, 8]), GRAD_CAM),
    "multi-input-resnet": (
        lambda tiny: build_model("multi-input", backbone="pretrained", model_name_or_path=str(tiny["resnet"])),
        GRAD_CAM,
    ),
    "multi-input-vit": (
        lambda tiny: build_model("multi-input", backbone="pretrained", model_name_or_path=str(tiny["vit"])),
        ATTENTION_ROLLOUT,
    ),
    "timm": (lambda tiny: pretrained(str(tiny["timm"])), GRAD_CAM),
    "multi-input-timm": (
        lambda tiny: build_model("multi-input", backbone="pretrained", model_name_or_path=str(tiny["timm"])),
        GRAD_CAM,
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gets_its_heatmap_and_keeps_its_predictions(
    family, tiny_resnet_checkpoint, tiny_vit_checkpoint, tiny_timm_checkpoint, tmp_path
):
    tiny = {"resnet": tiny_resnet_checkpoint, "vit": tiny_vit_checkpoint, "timm": tiny_timm_checkpoint}
    make, method = FAMILIES[family]
    torch.manual_seed(0)
    model = make(tiny)
    pretrained_from = next((str(path) for name, path in tiny.items() if name in family), None)
    model.save_pretrained(tmp_path)
    processor_for(model, pretrained=pretrained_from, train_ages=[40.0, 60.0]).save_pretrained(tmp_path)
    classifier = SkinClassifier.from_pretrained(tmp_path)  # loaded as a user loads it: sdpa attention for ViT
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    metadata = {"age": "45", "sex": "female"} if classifier.metadata_fields else {}
    before = classifier.predict_proba(image, **metadata)

    explanation = explain(classifier, image, **metadata)
    assert explanation.method == method
    assert explanation.heatmap.shape == (150, 200) and explanation.overlay.size == (200, 150)
    assert 0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1 and explanation.heatmap.std() > 0
    if method == GRAD_CAM:  # the most probable class by default
        assert explanation.target == classifier.labels[int(before.argmax())]
    # Hooks are gone, no gradients are left behind, and predictions are what they were.
    assert all(p.grad is None for p in classifier.model.parameters())
    torch.testing.assert_close(classifier.predict_proba(image, **metadata), before)


def test_attention_rollout_of_one_layer_is_the_cls_attention_over_the_patch_grid(tiny_vit_checkpoint):
    """With one layer, rollout is the CLS token's head-averaged attention to each patch (halved by the residual
    identity), laid out row by row on the 4 × 4 patch grid."""
    model = pretrained(str(tiny_vit_checkpoint))
    classifier = SkinClassifier(model, processor_for(model, pretrained=str(tiny_vit_checkpoint)))
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    explanation = explain(classifier, image)
    [attention] = model.vit(**classifier.model_inputs(image), output_attentions=True).attentions
    expected = attention[0].mean(0)[0, 1:].reshape(4, 4).detach().numpy()
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    patch_centres = explanation.heatmap[4::8, 4::8]  # the centre pixel of each 8 × 8 patch
    np.testing.assert_allclose(patch_centres, expected, atol=0.1)  # bilinear upsampling blends in a neighbour


@pytest.mark.parametrize("family", [name for name, (_, method) in FAMILIES.items() if method == GRAD_CAM])
def test_grad_cam_hooks_the_module_that_outputs_the_backbones_feature_map(
    family, tiny_resnet_checkpoint, tiny_vit_checkpoint, tiny_timm_checkpoint
):
    """One rule for every backbone: Grad-CAM reads the (B, C, h, w) map the backbone returns as `last_hidden_state`
    (timm's `forward_features` for a timm classifier, whose base model is the timm model itself)."""
    tiny = {"resnet": tiny_resnet_checkpoint, "vit": tiny_vit_checkpoint, "timm": tiny_timm_checkpoint}
    torch.manual_seed(0)
    model = FAMILIES[family][0](tiny).eval()
    backbone, x = backbone_of(model), torch.randn(1, 3, 32, 32)
    seen = []
    _feature_map_layer(backbone, x).register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        if family == "timm":
            expected = backbone.forward_features(x)
        else:
            expected = backbone(pixel_values=x).last_hidden_state
    [output] = seen
    assert expected.ndim == 4
    torch.testing.assert_close(output, expected, rtol=0, atol=0)


def test_a_backbone_without_a_feature_map_is_named(tiny_vit_checkpoint):
    backbone = backbone_of(pretrained(str(tiny_vit_checkpoint)))
    with pytest.raises(ValueError, match=r"ViTModel backbone: Grad-CAM needs .* it gives \(1, 17, 16\)"):
        _feature_map_layer(backbone, torch.randn(1, 3, 32, 32))
