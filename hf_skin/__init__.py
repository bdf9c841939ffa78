"""hf-skin: fine-tune and evaluate skin-lesion classifiers on HAM10000, the Hugging Face way."""

__version__ = "0.1.0"

# Re-exports, imported on first use (PEP 562): `import hf_skin` stays light, so that the parts that need no torch
# (the data, the cards, the pushes) do not load it. `from hf_skin import build_model` imports hf_skin.models, which
# registers hf-skin's model classes with the Auto classes.
_EXPORTS = {
    "DX_LABELS": "data",
    "load_ham10000": "data",
    "SkinCNNConfig": "models",
    "SkinCNNForImageClassification": "models",
    "build_model": "models",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
