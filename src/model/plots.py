"""Figures of a model's scores, from scikit-learn's displays: the confusion matrix, precision-recall and ROC curves."""

from __future__ import annotations

import numpy as np


def plots(y: np.ndarray, proba: np.ndarray, threshold: float, title: str) -> dict[str, object]:
    """Confusion matrix, precision-recall and ROC curves from scikit-learn's displays, as figures by file name."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    figures = {}
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    ConfusionMatrixDisplay.from_predictions(
        y, (proba >= threshold).astype(int), display_labels=["legit", "fraud"], ax=ax, colorbar=False
    )
    ax.set_title(f"{title}\nconfusion matrix at p >= {threshold:g}")
    figures["confusion_matrix.png"] = fig
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    PrecisionRecallDisplay.from_predictions(y, proba, ax=ax, name="RandomForest", plot_chance_level=True)
    ax.legend(loc="lower left")  # the curve runs along the top right
    ax.set_title(f"{title}\nprecision-recall curve")
    figures["precision_recall_curve.png"] = fig
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    RocCurveDisplay.from_predictions(y, proba, ax=ax, name="RandomForest", plot_chance_level=True)
    ax.set_title(f"{title}\nROC curve")
    figures["roc_curve.png"] = fig
    for fig in figures.values():
        fig.tight_layout()
    return figures


def net_gain_figure(title: str, threshold: float, oof: tuple[np.ndarray, np.ndarray] | None = None,
                    test: tuple[np.ndarray, np.ndarray] | None = None) -> object:
    """Net gain against the threshold: the out-of-fold curve (where the threshold was chosen) and, once tested, the
    test split's, the chosen threshold marked (each a sum over its own rows: compare where they peak, not their
    heights)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for label, curve, style in (("out-of-fold (training split)", oof, "-"), ("held-out test split", test, "--")):
        if curve is not None:
            ax.plot(curve[0], curve[1], style, label=label)
    ax.axvline(threshold, color="tab:red", linewidth=1, label=f"chosen threshold {threshold:.3f}")
    ax.set_xlabel("decision threshold (flag when the fraud probability is at least this)")
    ax.set_ylabel("net gain (cost model, sum over the rows scored)")
    ax.set_title(f"{title}\nnet gain against the threshold")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
