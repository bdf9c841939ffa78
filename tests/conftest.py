import os

# Set before any Hugging Face import: no test may touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

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
