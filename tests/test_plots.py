"""Plots read back from their matplotlib artists: the geometry, not only that a file exists."""

import numpy as np
import pytest

from tlkeras.plots import plot_per_class


def per_class_report(num_classes: int) -> dict:
    rng = np.random.default_rng(num_classes)
    names = [f"class_{i}" for i in range(num_classes)]
    scores = rng.uniform(0.2, 1.0, size=(num_classes, 3))
    per_class = {
        name: dict(zip(("precision", "recall", "f1-score"), map(float, row), strict=True))
        for name, row in zip(names, scores, strict=True)
    }
    return {"class_names": names, "per_class": per_class}


@pytest.mark.parametrize("num_classes", [3, 60])
def test_per_class_bars_stay_in_their_class_row_and_do_not_overlap(num_classes, tmp_path):
    report = per_class_report(num_classes)
    figure = plot_per_class(report, path=tmp_path / "per_class.png")
    ax = figure.axes[0]
    assert [c.get_label() for c in ax.containers] == ["precision", "recall", "f1-score"]
    ticks = ax.get_yticks()
    assert [t.get_text() for t in ax.get_yticklabels()] == report["class_names"]
    for index, name in enumerate(report["class_names"]):
        bars = sorted((c.patches[index] for c in ax.containers), key=lambda bar: bar.get_y())
        spans = [(bar.get_y(), bar.get_y() + bar.get_height()) for bar in bars]
        assert all(0 < bar.get_height() < 1 / 3 for bar in bars)
        # Inside the class's own row, around its tick, so never over the next class's bars.
        assert ticks[index] - 0.5 < spans[0][0] and spans[-1][1] < ticks[index] + 0.5
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert end <= start + 1e-9, f"the bars of {name} overlap each other"
        widths = {c.get_label(): c.patches[index].get_width() for c in ax.containers}
        assert widths == pytest.approx(report["per_class"][name])
    assert (tmp_path / "per_class.png").stat().st_size > 0
