"""Figures for the data analysis, the evaluation and training: one PNG per figure, drawn without a display.

Figures are built on `matplotlib.figure.Figure` directly, not `pyplot`: no global backend switch (a notebook that
imports hf_skin keeps its own), no figure left open, and the same code runs headless on a server.
"""

from .data import (
    ANALYSIS_COLUMNS,
    MISSING_MARKERS,
    data_analysis_figures,
    metadata_frame,
    missing_counts,
    plot_data_analysis,
)
from .evaluation import (
    confusion_matrix_figure,
    plot_confusion_matrix,
    plot_reliability_diagram,
    plot_roc_curves,
    plot_subgroups,
    reliability_diagram_figure,
    roc_curves_figure,
    subgroup_figure,
)
from .style import DPI
from .training import plot_training_curves, training_curves_figure

__all__ = [
    "ANALYSIS_COLUMNS",
    "DPI",
    "MISSING_MARKERS",
    "confusion_matrix_figure",
    "data_analysis_figures",
    "metadata_frame",
    "missing_counts",
    "plot_confusion_matrix",
    "plot_data_analysis",
    "plot_reliability_diagram",
    "plot_roc_curves",
    "plot_subgroups",
    "plot_training_curves",
    "reliability_diagram_figure",
    "roc_curves_figure",
    "subgroup_figure",
    "training_curves_figure",
]
