import contextlib
import dataclasses
import os
import tempfile
import textwrap
import types

# Set before any Hugging Face import: no test may touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Datasets built by the tests (a new synthetic folder each session) go to a throwaway cache, not ~/.cache/hf_skin.
os.environ.setdefault("HF_SKIN_CACHE", os.path.join(tempfile.mkdtemp(prefix="hf_skin_test_cache_")))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REAL_HAM10000 = Path(__file__).resolve().parents[2] / "shared" / "ham10000"


@pytest.fixture(scope="session")
def real_ham_dir() -> Path:
    """The real HAM10000 subset beside the checkout (read-only); tests that need it skip when absent."""
    path = Path(os.environ.get("HAM10000_DIR", REAL_HAM10000))
    if not (path / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found at {path} (set HAM10000_DIR to a download to run this test)")
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic HAM10000-layout folder shared by the whole session (treat as read-only)."""
    from hf_skin.synthetic import make_synthetic_ham10000

    return make_synthetic_ham10000(tmp_path_factory.mktemp("synthetic_ham"), num_lesions=150, seed=0)


@pytest.fixture(scope="session")
def tiny_resnet_checkpoint(tmp_path_factory) -> Path:
    """A random ResNet with a 1000-class ImageNet head and its image processor: microsoft/resnet-101 in miniature."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_resnet")
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=1000)
    ResNetForImageClassification(config).save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_vit_checkpoint(tmp_path_factory) -> Path:
    """A random ViT with a 1000-class head and its image processor: google/vit-base-patch16-224 in miniature."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_vit")
    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        num_labels=1000,
    )
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_timm_checkpoint(tmp_path_factory) -> Path:
    """A random timm EfficientNet (356 k parameters, 1000-class head) in the Hub's timm layout: what
    timm/tf_efficientnet_lite0.in1k holds, in miniature, loading as TimmWrapperForImageClassification."""
    import timm
    import torch

    from hf_skin.pretrained import save_timm_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=1000)
    return save_timm_checkpoint(model, tmp_path_factory.mktemp("tiny_timm"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


SMALL_CNN = '{"hidden_sizes": [8, 16], "downsample": true, "normalization": "batch", "head": "avg"}'


def small_args(dataset, output_dir, *extra) -> list[str]:
    """finetune.py flags for a tiny CNN run on `dataset` (tests add their own limits in `extra`)."""
    return [
        "--model",
        "cnn",
        "--dataset",
        str(dataset),
        "--output_dir",
        str(output_dir),
        "--config_overrides",
        SMALL_CNN,
        *extra,
    ]


def load_script(name: str):
    """Imports scripts/<name>.py by path (putting scripts/ on sys.path would let scripts/evaluate.py shadow the
    `evaluate` library)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hf_skin_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save_checkpoint(path: Path, name: str, **kwargs) -> Path:
    import torch

    from hf_skin.models import build_model
    from hf_skin.processing import processor_for

    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    model.save_pretrained(path)
    processor_for(model, train_ages=[35.0, 50.0, 65.0]).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def image_only_checkpoint(tmp_path_factory) -> Path:
    """A small random CNN checkpoint (7 classes, 32×32) with its processor, as `make demo` saves one."""
    import json

    return _save_checkpoint(tmp_path_factory.mktemp("cnn_checkpoint"), "cnn", **json.loads(SMALL_CNN))


@pytest.fixture(scope="session")
def multi_input_checkpoint(tmp_path_factory) -> Path:
    """A small random multi-input checkpoint (CNN backbone + age, sex, localization) with its processor."""
    return _save_checkpoint(tmp_path_factory.mktemp("multi_input_checkpoint"), "multi-input", hidden_sizes=[4, 8])


def load_space_app():
    """Imports spaces/app.py (the Gradio Space) by path."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "spaces" / "app.py"
    spec = importlib.util.spec_from_file_location("hf_skin_space_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass
class ServedSpace:
    """A running Space: its URL, the app module and page it was built from, and the classifier it serves."""

    url: str
    app: types.ModuleType
    demo: object
    classifier: object


@contextlib.contextmanager
def serve_space(checkpoint, classifier=None, env: dict[str, str] | None = None):
    """The Space for `checkpoint` (or for `classifier`, e.g. a `RecordingClassifier` over it), built and launched in
    this process as spaces/app.py's `__main__` does, on 127.0.0.1 at a free port, with `env` (the Space's
    variables) set while it reads its settings."""
    import socket
    from unittest import mock

    from hf_skin.inference import SkinClassifier

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = load_space_app()
    classifier = classifier or SkinClassifier.from_pretrained(checkpoint)
    with mock.patch.dict(os.environ, env or {}):
        demo = app.build_demo(classifier, model_name=str(checkpoint))
        app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield ServedSpace(f"http://127.0.0.1:{port}/", app, demo, classifier)
    finally:
        demo.close()


def recording_classifier(checkpoint):
    """A `SkinClassifier` over `checkpoint` that records the metadata each model input is built from (`.calls`, one
    dict per image) and, while `.gate` is cleared, holds every request there: what the model receives, seen from
    inside."""
    import threading

    from hf_skin.inference import SkinClassifier

    class RecordingClassifier(SkinClassifier):
        def __init__(self, model, processor):
            super().__init__(model, processor)
            self.calls: list[dict] = []
            self.gate = threading.Event()
            self.gate.set()

        def model_inputs(self, images, **metadata):
            self.calls.append(metadata)
            if not self.gate.wait(timeout=120):
                raise TimeoutError("the test never opened the gate")
            return super().model_inputs(images, **metadata)

    return RecordingClassifier.from_pretrained(checkpoint)


# Loads a checkpoint (folder or Hub id, argv[1]) with trust_remote_code in a process where hf_skin cannot be
# imported, and prints the logits of a fixed random batch as JSON: the remote-code path a user without hf-skin takes.
REMOTE_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["hf_skin"] = None  # hf_skin is not installed here: importing it must fail
    import torch
    from transformers import AutoModelForImageClassification
    try:
        import hf_skin  # noqa
        raise SystemExit("hf_skin was importable")
    except ImportError:
        pass
    model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    torch.manual_seed(0)
    with torch.no_grad():
        print(json.dumps(model(torch.randn(2, 3, 32, 32)).logits.tolist()))
    """
)
