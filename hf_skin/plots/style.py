"""What every hf-skin figure shares: the resolution, the writer, the colours, the diagnoses' names."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..labels import DX_NAMES

DPI = 120
_SPLIT_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3"]
_SEX_COLORS = {"male": "#4C72B0", "female": "#DD8452", "unknown": "#BBBBBB"}
_RUN_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def _dx_name(dx: str) -> str:
    return DX_NAMES.get(dx, dx)


def _class_colors(label_names: list[str]) -> dict[str, str]:
    """Fixed colours per HAM10000 class (melanoma red) so every figure reads the same; others from tab10."""
    fixed = {"akiec": "#8172B3", "bcc": "#DD8452", "bkl": "#937860", "df": "#55A868", "mel": "#C44E52"}
    fixed |= {"nv": "#4C72B0", "vasc": "#DA8BC3"}
    spare = iter(_RUN_COLORS)
    return {name: fixed.get(name) or next(spare, "#333333") for name in label_names}
