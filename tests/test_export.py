"""ONNX export (hf_skin.export) and the onnxruntime backend of SkinClassifier: every family, a dynamic batch axis,
the same predictions as PyTorch from the same files, int8 measured against fp32, serving without torch, and clear
refusals."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import load_script, small_args

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from hf_skin.data import load_ham10000  # noqa: E402
from hf_skin.export import ExportError, export_onnx, run_inputs  # noqa: E402
from hf_skin.inference import EXPORT_SPEC, SkinClassifier  # noqa: E402

METADATA = {"age": ["45", None, "80", "0", "abc", "30"], "sex": "female", "localization": "lower extremity"}


def _finetuned(path, name, pretrained=None, image_size=None, **kwargs):
    """A fine-tuned-looking checkpoint of family `name` over a tiny pretrained one, as training saves it."""
    import torch

    from hf_skin.models import build_model
    from hf_skin.processing import processor_for

    torch.manual_seed(0)
    model = build_model(name, model_name_or_path=pretrained and str(pretrained), **kwargs)
    model.save_pretrained(path)
    processor = processor_for(model, pretrained and str(pretrained), [30.0, 50.0, 70.0], image_size)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(
    image_only_checkpoint,
    multi_input_checkpoint,
    tiny_resnet_checkpoint,
    tiny_vit_checkpoint,
    tiny_timm_checkpoint,
    tmp_path_factory,
):
    root = tmp_path_factory.mktemp("families")
    return {
        "cnn": image_only_checkpoint,
        "multi-input": multi_input_checkpoint,
        "resnet": _finetuned(root / "resnet", "resnet101", tiny_resnet_checkpoint),
        "vit": _finetuned(root / "vit", "vit", tiny_vit_checkpoint),
        "timm": _finetuned(root / "timm", "efficientnet-lite0", tiny_timm_checkpoint, image_size=(48, 64)),
        "multi-input-timm-film": _finetuned(
            root / "multi_timm",
            "multi-input",
            tiny_timm_checkpoint,
            image_size=(40, 56),
            backbone="pretrained",
            fusion="film",
        ),
    }


def lesion_files(synthetic_dir, n=6):
    return sorted(synthetic_dir.glob("HAM10000_images_part_*/*.jpg"))[:n]


@pytest.mark.parametrize("family", ["cnn", "multi-input", "resnet", "vit", "timm", "multi-input-timm-film"])
def test_every_family_exports_with_a_dynamic_batch_and_predicts_as_pytorch(
    family, checkpoints, synthetic_dir, tmp_path
):
    import onnx

    checkpoint = checkpoints[family]
    spec = export_onnx(checkpoint, tmp_path / "export")
    torch_classifier = SkinClassifier.from_pretrained(checkpoint)
    onnx_classifier = SkinClassifier.from_pretrained(tmp_path / "export")
    assert onnx_classifier.is_onnx and not torch_classifier.is_onnx

    graph = onnx.load(tmp_path / "export" / "model.onnx").graph
    names = [i.name for i in graph.input]
    assert names == [i["name"] for i in spec["inputs"]]
    multi = family.startswith("multi-input")
    assert names == (["pixel_values", "age", "age_missing", "sex", "localization"] if multi else ["pixel_values"])
    for graph_input in graph.input:  # the batch axis is symbolic, the rest fixed
        dims = graph_input.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value
        assert all(d.dim_value > 0 for d in dims[1:])
    height, width = spec["image"]["input_size"]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [3, height, width]

    assert onnx_classifier.labels == torch_classifier.labels == spec["labels"]
    assert onnx_classifier.metadata_fields == torch_classifier.metadata_fields
    metadata = METADATA if multi else {}
    files = lesion_files(synthetic_dir)
    for n in (1, len(files)):  # batch 1 and 6 through one graph
        batch = files[:n]
        given = {field: value[:n] if isinstance(value, list) else value for field, value in metadata.items()}
        expected = torch_classifier.predict_proba(batch, **given).numpy()
        got = onnx_classifier.predict_proba(batch, **given)
        assert isinstance(got, np.ndarray) and got.shape == expected.shape == (len(batch), len(spec["labels"]))
        assert np.abs(got - expected).max() <= 1e-4
        assert (got.argmax(1) == expected.argmax(1)).all()
    one = {field: value[0] if isinstance(value, list) else value for field, value in metadata.items()}
    [ranked] = onnx_classifier.predict(files[0], **one)
    assert ranked == pytest.approx(torch_classifier.predict(files[0], **one)[0], abs=1e-4)
    assert list(ranked.values()) == sorted(ranked.values(), reverse=True)
    assert spec["models"]["fp32"]["parity"]["top1_agreement"] == 1.0
    assert spec["models"]["fp32"]["parity"]["max_probability_difference"] <= 1e-4


def test_the_spec_says_how_to_feed_the_model_and_read_it(checkpoints, tmp_path):
    spec = export_onnx(checkpoints["multi-input"], tmp_path / "export")
    assert json.loads((tmp_path / "export" / EXPORT_SPEC).read_text()) == spec
    meta_config = json.loads((checkpoints["multi-input"] / "metadata_processor.json").read_text())
    image_config = json.loads((checkpoints["multi-input"] / "preprocessor_config.json").read_text())
    assert spec["image"]["resize"] == {
        "height": image_config["size"]["height"],
        "width": image_config["size"]["width"],
    }
    assert spec["image"]["resample"] == {2: "bilinear", 3: "bicubic"}[image_config["resample"]]
    assert spec["image"]["image_mean"] == image_config["image_mean"]
    assert spec["image"]["rescale_factor"] == pytest.approx(1 / 255)
    assert spec["metadata"]["fields"] == ["age", "sex", "localization"]
    assert spec["metadata"]["vocabularies"] == meta_config["vocabularies"]
    assert spec["metadata"]["age"]["mean"] == pytest.approx(meta_config["age_mean"])
    assert spec["labels"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert spec["label_names"]["mel"] == "Melanoma" and spec["malignant"] == ["akiec", "bcc", "mel"]
    assert spec["calibration"] is None and spec["operating_point"] is None  # this checkpoint has neither
    assert spec["int8_ready"] is None  # nor int8-ready weights
    assert spec["models"]["fp32"]["bytes"] == (tmp_path / "export" / "model.onnx").stat().st_size


def test_a_config_calibration_operating_point_and_int8_readiness_are_carried_into_the_spec(checkpoints, tmp_path):
    from hf_skin.inference import SkinClassifier as Classifier

    classifier = Classifier.from_pretrained(checkpoints["cnn"])
    calibration = {
        "method": "temperature",
        "temperature": 1.7,
        "logit_bias": [0.0] * 7,
        "sampling_prior": None,
        "target_prior": None,
        "target_prior_source": "the training split's mix",
        "train_counts": None,
    }
    point = {"threshold": 0.12, "target_sensitivity": 0.9}
    classifier.model.config.calibration = calibration
    classifier.model.config.operating_point = point
    ready = {"steps": 300, "learning_rate": 2e-6, "training_images": 2048, "loss": "mse"}
    classifier.model.config.int8_ready = ready
    spec = export_onnx(classifier, tmp_path / "export")
    assert spec["calibration"] == calibration and spec["operating_point"] == point and spec["int8_ready"] == ready
    assert spec["calibration_note"] == classifier.calibration.describe(classifier.labels)
    assert "calibrated by temperature" in spec["calibration_note"]
    onnx_classifier = SkinClassifier.from_pretrained(tmp_path / "export")
    assert onnx_classifier.operating_point == point
    assert onnx_classifier.calibration.temperature == 1.7  # read back from the spec, as from a PyTorch config


@pytest.fixture(scope="module")
def finished_run(synthetic_dir, tmp_path_factory):
    """A finished tiny CNN run on the synthetic data (trained enough to be better than chance)."""
    from hf_skin.training import parse_args, run

    out = tmp_path_factory.mktemp("export_run") / "run"
    limits = ["--num_train_epochs", "2", "--train_metrics_samples", "0", "--per_device_train_batch_size", "16"]
    run(*parse_args(small_args(synthetic_dir, out, *limits)))
    return out


def test_int8_is_calibrated_on_training_images_and_measured_against_fp32(finished_run, synthetic_dir, tmp_path):
    script = load_script("export_onnx")
    spec = script.main([str(finished_run), str(tmp_path / "export"), "--quantize", "int8"])
    int8 = spec["models"]["int8"]
    assert (tmp_path / "export" / "model_int8.onnx").stat().st_size == int8["bytes"]
    # one way, static per channel and fully int8, written as earlier exports wrote their choice (the page reads
    # fp32_layers)
    assert (int8["method"], int8["per_channel"], int8["fp32_layers"], int8["quantization_aware"]) == (
        "static",
        True,
        0,
        False,
    )
    assert "candidates" not in int8 and "quantization_aware" not in spec
    drop = int8["validation"]["balanced_accuracy_reference"] - int8["validation"]["balanced_accuracy"]
    assert int8["validation"]["meets_targets"] == (int8["validation"]["top1_agreement"] >= 0.99 and drop <= 0.01)
    splits = load_ham10000(synthetic_dir)
    assert int8["validation"]["n"] == len(splits["validation"])  # the run's own validation split, all of it
    assert int8["calibration_images"] == min(256, len(splits["train"]))
    assert int8["input_grid"] is None  # ImageNet statistics: the input's range is calibrated

    # the int8 model's own predictions, through the classifier, are what the spec measured
    fp32 = SkinClassifier.from_pretrained(tmp_path / "export")
    quantized = SkinClassifier.from_pretrained(tmp_path / "export", precision="int8")
    torch_classifier = SkinClassifier.from_pretrained(finished_run)
    batches, labels = run_inputs(torch_classifier, splits["validation"])
    p32 = np.concatenate([fp32.model.logits(b) for b in batches]).argmax(1)
    p8 = np.concatenate([quantized.model.logits(b) for b in batches]).argmax(1)
    assert np.mean(p32 == p8) == pytest.approx(int8["validation"]["top1_agreement"])
    assert int8["validation"]["top1_agreement"] >= 0.9
    assert abs(int8["validation"]["balanced_accuracy"] - int8["validation"]["balanced_accuracy_reference"]) <= 0.05


def test_pixels_on_a_grid_are_quantised_exactly(checkpoints, synthetic_dir, tmp_path):
    """A processor whose mean is a whole pixel value (128/255, std 0.5: --int8_ready's) gives int8's input its scale
    and zero point: every 8-bit pixel of every image is then an int8 number exactly, whatever the calibration images'
    range."""
    import onnx
    from onnx import numpy_helper

    from hf_skin.processing import align_mean_to_pixels

    classifier = SkinClassifier.from_pretrained(checkpoints["cnn"])
    classifier.image_processor.image_mean, classifier.image_processor.image_std = [0.5] * 3, [0.5] * 3
    align_mean_to_pixels(classifier.image_processor)
    splits = load_ham10000(synthetic_dir)
    calibration, _ = run_inputs(classifier, splits["train"], 16)
    validation, labels = run_inputs(classifier, splits["validation"], 32)
    spec = export_onnx(classifier, tmp_path / "export", "int8", calibration, validation, labels)
    assert spec["models"]["int8"]["input_grid"] == {"scale": pytest.approx(2 / 255), "zero_point": 128}
    graph = onnx.load(tmp_path / "export" / "model_int8.onnx").graph
    stored = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    node = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "pixel_values")
    scale, zero_point = stored[node.input[1]], stored[node.input[2]]
    assert scale == np.float32(2 / 255) and zero_point == 128
    pixels = np.concatenate([b["pixel_values"] for b in validation])
    steps = pixels / scale + zero_point
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # exact, not rounded


def test_serving_an_export_never_imports_torch(checkpoints, synthetic_dir, tmp_path):
    export_onnx(checkpoints["multi-input"], tmp_path / "export")
    image = lesion_files(synthetic_dir, 1)[0]
    code = textwrap.dedent(
        f"""
        import json, sys
        from hf_skin.inference import SkinClassifier, summarize
        classifier = SkinClassifier.from_pretrained({str(tmp_path / "export")!r})
        probs = classifier.predict({str(image)!r}, age="45", sex="male", localization="back")[0]
        summarize(probs, operating_point=classifier.operating_point)
        classifier.calibration  # what the Space reads for its sentence
        print(json.dumps({{"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                          "probs": probs, "fields": classifier.metadata_fields}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["torch"] is False and out["transformers"] is False
    assert out["fields"] == ["age", "sex", "localization"]
    expected = SkinClassifier.from_pretrained(checkpoints["multi-input"]).predict(
        image, age="45", sex="male", localization="back"
    )[0]
    assert out["probs"] == pytest.approx(expected, abs=1e-4)


def test_bad_requests_are_refused_with_what_to_do(checkpoints, finished_run, tmp_path):
    script = load_script("export_onnx")
    with pytest.raises(SystemExit, match="does not exist"):
        script.main([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished_run, unfinished)
    (unfinished / "run_state.json").write_text(json.dumps({"status": "running", "started": "today"}))
    with pytest.raises(SystemExit, match="has not finished"):
        script.main([str(unfinished), str(tmp_path / "out")])
    # a checkpoint derived from a run (scripts/calibrate.py's copy: model and run record, no test metrics) exports
    derived = tmp_path / "derived"
    shutil.copytree(finished_run, derived)
    (derived / "test_metrics.json").unlink()
    assert script.main([str(derived), str(tmp_path / "derived_export")])["models"]["fp32"]["parity"]["n"] > 0
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not an hf-skin export.*notes.txt"):
        script.main([str(finished_run), str(occupied)])
    assert (occupied / "notes.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="holds no config.json"):
        export_onnx(tmp_path, tmp_path / "out2")
    with pytest.raises(ExportError, match="needs calibration and validation images"):
        export_onnx(checkpoints["cnn"], tmp_path / "out3", quantize="int8")
    with pytest.raises(ExportError, match="quantize='int4'"):
        export_onnx(checkpoints["cnn"], tmp_path / "out4", quantize="int4")
    # an export is replaced by the next export into its folder
    export_onnx(checkpoints["cnn"], tmp_path / "again")
    spec = export_onnx(checkpoints["multi-input"], tmp_path / "again")
    assert spec["metadata"] is not None and not (tmp_path / "again" / "model_int8.onnx").exists()
    with pytest.raises(ValueError, match="holds no int8 model.*--quantize int8"):
        SkinClassifier.from_pretrained(tmp_path / "again", precision="int8")
    with pytest.raises(ExportError, match="already an export"):
        export_onnx(SkinClassifier.from_pretrained(tmp_path / "again"), tmp_path / "out5")


def test_the_numpy_resize_gives_the_saved_processors_pixels(checkpoints, synthetic_dir):
    """The torch-free preprocessing of an export against transformers' processors (torchvision), pixel for pixel."""
    from PIL import Image
    from transformers import ConvNextImageProcessor, ViTImageProcessor

    from hf_skin.processing import image_spec, load_image, pixel_values_from_spec

    rng = np.random.default_rng(0)
    images = [load_image(path) for path in lesion_files(synthetic_dir, 3)]
    images += [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(450, 600), (31, 17)]]
    processors = [
        ViTImageProcessor(size={"height": 32, "width": 32}),  # bilinear
        ViTImageProcessor(size={"height": 132, "width": 176}, resample=3),
        ViTImageProcessor(size={"height": 64, "width": 48}, resample=0),
        ConvNextImageProcessor(size={"shortest_edge": 32}),  # resize then centre crop
        ConvNextImageProcessor(size={"shortest_edge": 384}),  # warp
    ]
    for processor in processors:
        expected = processor(images, return_tensors="pt")["pixel_values"].numpy()
        got = pixel_values_from_spec(images, image_spec(processor))
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(got - expected).max() < 1e-5, processor


def test_serving_an_export_without_onnxruntime_says_what_to_install(checkpoints, tmp_path):
    export_onnx(checkpoints["cnn"], tmp_path / "export")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["onnxruntime"] = None  # not installed
        from hf_skin.inference import SkinClassifier
        try:
            SkinClassifier.from_pretrained({str(tmp_path / "export")!r})
        except ImportError as err:
            print(err)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is an exported (ONNX) model: serving it needs onnxruntime (pip install 'hf-skin[onnx]'" in result.stdout


def test_quantisation_aware_copies_bring_int8_closer_to_fp32(finished_run, synthetic_dir, tmp_path):
    """A quantisation-aware copy's int8 logits (hf_skin.quantization, what --int8_ready trains) are closer to the
    original fp32 model's than post-training int8's, on the images it learned on, with either loss."""
    import torch

    from hf_skin.export import export_fp32, quantize, run_onnx
    from hf_skin.quantization import quantization_aware_copy

    original = SkinClassifier.from_pretrained(finished_run)
    reference = export_fp32(original, tmp_path / "fp32.onnx")
    splits = load_ham10000(synthetic_dir)
    batches, _ = run_inputs(original, splits["train"], 64, seed=2)
    models = {"post-training": original.model}
    for loss in ("mse", "kl"):
        models[loss] = quantization_aware_copy(original.model, batches, steps=40, learning_rate=2e-5, loss=loss)
        assert any(not torch.equal(a, b) for a, b in zip(models[loss].parameters(), original.model.parameters()))
    errors = {}
    for name, model in models.items():
        fp32 = export_fp32(SkinClassifier(model, original.processor), tmp_path / f"{name}.onnx")
        quantize(fp32, tmp_path / f"{name}_int8.onnx", batches[:2])
        errors[name] = float(
            np.mean((run_onnx(tmp_path / f"{name}_int8.onnx", batches) - run_onnx(reference, batches)) ** 2)
        )
    assert errors["mse"] < errors["post-training"] and errors["kl"] < errors["post-training"], errors
    with pytest.raises(ValueError, match="mse or kl"):
        quantization_aware_copy(original.model, batches, steps=1, loss="l1")


def test_an_int8_model_that_misses_the_targets_is_kept_and_said(finished_run, tmp_path, monkeypatch, caplog):
    import hf_skin.export.int8

    monkeypatch.setattr(hf_skin.export.int8, "_meets_targets", lambda result: False)
    script = load_script("export_onnx")
    spec = script.main([str(finished_run), str(tmp_path / "export"), "--quantize", "int8"])
    assert not spec["models"]["int8"]["validation"]["meets_targets"]
    assert (
        "the int8 model misses the targets" in caplog.text and "--int8_ready" in caplog.text
    )  # said, not only written
    quantized = SkinClassifier.from_pretrained(tmp_path / "export", precision="int8")  # kept, and it serves
    assert quantized.model.logits({"pixel_values": np.zeros((1, 3, 32, 32), np.float32)}).shape == (1, 7)


def test_a_quantiser_failure_is_one_export_error(checkpoints, tmp_path, monkeypatch):
    import onnxruntime.quantization

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported node")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", fail)
    batches = [{"pixel_values": np.zeros((2, 3, 32, 32), np.float32)}]
    with pytest.raises(ExportError, match="int8 quantisation of .*model.onnx failed: unsupported node"):
        export_onnx(checkpoints["cnn"], tmp_path / "export", "int8", batches, batches)
