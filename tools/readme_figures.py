"""Draw the README's training-curve figure from a real run: `.venv/bin/python tools/readme_figures.py`.

A CNN on scikit-learn's digits (chapter 03's Learner, two learning rates), plotted in the course style with
`trainkit.core.plot_history`; written to docs/screenshots/training_curve.png. CPU, about 20 s.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from trainkit.core import new_figure, plot_history, seed_everything, style_axes  # noqa: E402
from trainkit.datasets import load_datasets  # noqa: E402
from trainkit.learner import Learner  # noqa: E402
from trainkit.models import CNN  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots" / "training_curve.png"


def main():
    digits = load_datasets("digits")
    fig, (ax_loss, ax_acc) = new_figure(ncols=2, size=(4.8, 3.2))
    for lr in (3e-3, 3e-2):
        seed_everything(0)
        learn = Learner(CNN(), digits)
        learn.fit(12, lr=lr)
        plot_history(learn.history, ax=ax_loss, label=f"lr={lr:g}", legend=False)
        ax_acc.plot([h["epoch"] + 1 for h in learn.history], [h["accuracy"] for h in learn.history], marker="o",
                    ms=3, label=f"lr={lr:g}")
        print(f"lr={lr:g}: valid accuracy {learn.history[-1]['accuracy']:.3f}")
    ax_loss.legend(fontsize=8)
    style_axes(ax_acc, "Validation accuracy", "epoch", "accuracy", integer_x=True)
    fig.suptitle("A CNN on scikit-learn's digits, trained with trainkit's Learner (CPU)", fontsize=10)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
