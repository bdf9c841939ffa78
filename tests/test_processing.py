import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from hf_skin.data import LOCALIZATION_LABELS, SEX_LABELS
from hf_skin.models import build_model
from hf_skin.processing import SkinProcessor, build_image_processor, load_image, processor_for


@pytest.fixture
def processor():
    model = build_model("multi-input", hidden_sizes=[4, 8])
    return processor_for(model, train_ages=[30.0, 50.0, None, 70.0, float("nan")])


def rgb(width=200, height=150, mode="RGB"):
    array = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def test_age_statistics_come_from_known_training_ages(processor):
    assert processor.age_mean == pytest.approx(50.0)
    assert processor.age_std == pytest.approx(np.std([30, 50, 70]))


def test_metadata_as_a_person_types_it(processor, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_skin.processing"):
        out = processor.encode_metadata(
            6,
            age=["45", 45, None, "", "forty", "250"],
            sex=["Female", "M", None, "unknown", "robot", "male"],
            localization=["lower_extremity", "Back ", None, "scalp", "moon", "acral"],
        )
    std = processor.age_std
    torch.testing.assert_close(out["age"][:2], torch.tensor([(45 - 50) / std] * 2))
    assert out["age_missing"].tolist() == [0, 0, 1, 1, 1, 1] and out["age"][2:].abs().sum() == 0
    assert [SEX_LABELS[i] for i in out["sex"]] == ["female", "male", "unknown", "unknown", "unknown", "male"]
    assert [LOCALIZATION_LABELS[i] for i in out["localization"]] == [
        "lower extremity",
        "back",
        "unknown",
        "scalp",
        "unknown",
        "acral",
    ]
    # Values given but not understood are reported, never silently mapped; plain missing values are not.
    assert "'forty' is not a number" in caplog.text and "'250' is outside 0-120" in caplog.text
    assert "'robot' is not one of" in caplog.text and "'moon' is not one of" in caplog.text
    assert "None" not in caplog.text


def test_every_category_of_every_field_is_understood_as_the_dataset_spells_it(caplog):
    """HAM10000 spells dx_type `follow_up` and localization `lower extremity`: each, and its variants, must match."""
    model = build_model("multi-input", hidden_sizes=[4], metadata_fields=["sex", "localization", "dx_type"])
    processor = processor_for(model)
    with caplog.at_level(logging.WARNING, logger="hf_skin.processing"):
        for field in ("sex", "localization", "dx_type"):
            vocabulary = model.config.vocabularies[field]
            for variant in (str, str.upper, lambda v: v.replace("_", " "), lambda v: v.replace(" ", "_")):
                out = processor.encode_metadata(len(vocabulary), **{field: [variant(v) for v in vocabulary]})
                assert out[field].tolist() == list(range(len(vocabulary))), (field, variant)
    assert "not one of" not in caplog.text


def test_single_values_broadcast_and_length_mismatch_is_named(processor):
    out = processor([rgb(), rgb()], age="60", sex="female")
    assert out["pixel_values"].shape == (2, 3, 32, 32)
    assert out["age_missing"].tolist() == [0, 0] and out["localization"].tolist() == [14, 14]
    with pytest.raises(ValueError, match="sex has 3 values for 2 images"):
        processor([rgb(), rgb()], sex=["male"] * 3)


def test_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "metadata_processor.json").read_text())
    assert saved["metadata_fields"] == ["age", "sex", "localization"] and saved["age_mean"] == pytest.approx(50.0)
    reloaded = SkinProcessor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()
    a = processor(rgb(), age="33", sex="male", localization="face")
    b = reloaded(rgb(), age="33", sex="male", localization="face")
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_load_image_gives_rgb_for_any_mode(mode):
    image = rgb().convert("L").convert(mode) if mode == "I;16" else rgb().convert(mode)
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (200, 150)


def test_load_image_scales_16_bit_grey_and_shows_transparency_over_white(tmp_path):
    ramp = np.linspace(0, 65535, 150 * 200).reshape(150, 200).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    out = np.asarray(load_image(tmp_path / "grey16.png"), dtype=np.float64)
    np.testing.assert_allclose(out[..., 1], ramp / 257, atol=1)  # PIL's own convert("RGB") clips it to white
    transparent_black = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    assert np.asarray(load_image(transparent_black)).min() == 255


def test_load_image_applies_exif_rotation_and_reduced_jpeg_decoding():
    image = rgb(200, 150)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the camera held sideways
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    assert load_image(buffer.getvalue()).size == (150, 200)
    small = load_image({"bytes": buffer.getvalue(), "path": None}, target_size=32)
    assert min(small.size) >= 32 and max(small.size) <= 100  # decoded at 1/4 scale, never below the target


def test_load_image_corrupt_input_is_named(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot decode .*broken.jpg"):
        load_image(path)


def test_image_only_processor_is_a_plain_image_processor():
    model = build_model("cnn")
    processor = processor_for(model)
    assert type(processor) is type(build_image_processor(32))
    assert processor.size == {"height": 32, "width": 32}


@pytest.mark.parametrize("value", [None, {"bytes": None, "path": None}, b"", {"bytes": b"", "path": None}])
def test_load_image_null_or_empty_is_named(value):
    # What a null row of a dataset's image column gives (Image(decode=False)): today a TypeError from os.fspath.
    with pytest.raises(ValueError, match=r"no image \(null or empty\).*Replace or remove this image"):
        load_image(value)


def test_load_image_lazily_opened_truncated_pil_image_is_named():
    # A caller's own Image.open(...) reads the header only: the truncation shows when load_image reads the pixels.
    buffer = io.BytesIO()
    rgb().save(buffer, "JPEG")
    lazy = Image.open(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]))
    with pytest.raises(ValueError, match="cannot decode the given PIL image: OSError: image file is truncated"):
        load_image(lazy)


def test_a_mean_of_half_is_rounded_to_a_pixel_value_so_that_pixels_are_exact_int8_numbers():
    """With mean 0.5 every normalised 8-bit pixel falls half-way between two steps of any int8 grid (127.5); rounded
    to 128/255, pixel p becomes exactly (p - 128) * 2/255, the grid an int8 input with zero point 128 holds."""
    from hf_skin.processing import align_mean_to_pixels, image_spec, pixel_grid

    half = build_image_processor((8, 12), [0.5] * 3, [0.5] * 3)
    assert pixel_grid(image_spec(half)) is None
    pixels = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    before = half(Image.fromarray(pixels), return_tensors="np")["pixel_values"][0]
    assert align_mean_to_pixels(half) == pytest.approx([128 / 255] * 3)
    assert half.image_mean == pytest.approx([128 / 255] * 3)
    step, zero = pixel_grid(image_spec(half))
    assert (step, zero) == (pytest.approx(2 / 255), 128)
    after = half(Image.fromarray(pixels), return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(after, before - 1 / 255, atol=1e-6)  # half a pixel level, no more
    on_grid = after / step + zero
    np.testing.assert_allclose(on_grid, np.round(on_grid), atol=1e-4)  # whole int8 numbers, not half-way
    np.testing.assert_allclose(np.round(on_grid), pixels.transpose(2, 0, 1))  # the pixel values themselves
    assert align_mean_to_pixels(half) is None  # aligned already
    # ImageNet's statistics give no one grid for the three channels: left as they are
    imagenet = build_image_processor((8, 12))
    assert align_mean_to_pixels(imagenet) is None and list(imagenet.image_mean) == [0.485, 0.456, 0.406]


def test_aligning_the_mean_reaches_a_timm_models_pretrained_cfg_and_needs_no_exportable_processor():
    """timm's tools and fine-tuning rebuild the processor from `pretrained_cfg` (an image-only model's config, a
    multi-input model's backbone_config): it gets the same mean. Only the normalisation is read, so a processor that
    the exported runtimes do not support (a centre crop, Lanczos) is aligned all the same."""
    from types import SimpleNamespace

    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    from hf_skin.processing import align_mean_to_pixels

    backbone = SimpleNamespace(model_type="timm_wrapper", pretrained_cfg={"mean": [0.5] * 3, "std": [0.5] * 3})
    multi_input = SimpleNamespace(model_type="hf_skin_multi_input", backbone_config=backbone)
    cropping = ViTImageProcessor(
        image_mean=[0.5] * 3, image_std=[0.5] * 3, do_center_crop=True, resample=PILImageResampling.LANCZOS
    )
    assert align_mean_to_pixels(cropping, multi_input) == pytest.approx([128 / 255] * 3)
    assert backbone.pretrained_cfg == {"mean": pytest.approx([128 / 255] * 3), "std": [0.5] * 3}
    timm = SimpleNamespace(model_type="timm_wrapper", pretrained_cfg={"mean": [0.5] * 3})
    align_mean_to_pixels(build_image_processor((8, 12), [0.5] * 3, [0.5] * 3), timm)
    assert timm.pretrained_cfg["mean"] == pytest.approx([128 / 255] * 3)


def test_one_resolver_gives_the_input_size_from_every_description_of_it():
    """A processor, its model, its saved `size`, its export spec and a timm `pretrained_cfg` all answer alike."""
    from types import SimpleNamespace

    from transformers import ConvNextImageProcessor

    from hf_skin.processing import image_spec, input_size, parse_image_size, resolve_input_size

    cnn = build_model("cnn", image_size=48)
    assert resolve_input_size(cnn) == resolve_input_size(cnn.config) == (48, 48)
    assert resolve_input_size(processor_for(cnn)) == (48, 48)
    multi_input = build_model("multi-input", hidden_sizes=[4, 8])
    assert resolve_input_size(multi_input) == resolve_input_size(processor_for(multi_input)) == (32, 32)
    wide = build_image_processor((150, 200))
    assert resolve_input_size(wide) == resolve_input_size(wide.to_dict()["size"]) == (150, 200)
    assert image_spec(wide)["input_size"] == [150, 200] and input_size(wide) == 200  # the longer side
    # ResNet's processor: the short side to 224 / crop_pct, then a 224 centre crop
    resnet = ConvNextImageProcessor(size={"shortest_edge": 224})
    assert resolve_input_size(resnet) == resolve_input_size(image_spec(resnet)["resize"]) == (224, 224)
    timm = SimpleNamespace(model_type="timm_wrapper", pretrained_cfg={"input_size": [3, 132, 176]})
    assert resolve_input_size(SimpleNamespace(config=timm)) == (132, 176)
    assert resolve_input_size(SimpleNamespace(model_type="resnet")) is None  # its config names no size
    assert resolve_input_size(parse_image_size("150x200")) == (150, 200) and parse_image_size("224") == (224, 224)
    with pytest.raises(ValueError, match="at least 8 px"):
        parse_image_size("4x300")
