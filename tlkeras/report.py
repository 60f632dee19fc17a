"""The evaluation report folder: metrics as JSON and CSV, figures as PNG, all on one HTML page.

`write_report` turns an `evaluate` report into:

    report_dir/
        report.html                      everything below on one self-contained page (the
                                         pictures are embedded), so it opens offline
        metrics.json                     accuracy, top-k accuracy, per-class precision, recall,
                                         F1 and support, averages, most confused pairs
        confusion_matrix.json            counts and row-normalised fractions, rows = true class
        confusion_matrix.png             counts
        confusion_matrix_normalized.png  each row divided by its class's image count
        per_class.png                    precision, recall and F1 per class
        top_losses.png                   the images with the highest loss
        predictions.csv                  every image: path, true and predicted class,
                                         probability, loss (in evaluation order)
        history.png                      training curves, when the run has a history

Example:
    >>> run = tl.load_run("runs/digits")
    >>> report = tl.evaluate(run, "data_samples/digits")
    >>> write_report(run, report, "reports/digits")
    'reports/digits/report.html'
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os

from tlkeras import plots
from tlkeras.evaluate import most_confused, top_losses
from tlkeras.files import atomic_write
from tlkeras.runs import Run

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.json"
PREDICTIONS_FILE = "predictions.csv"


def report_metrics(report: dict, *, run: Run | None = None) -> dict:
    """The summary that goes into `metrics.json`: everything except the per-image lists."""
    keep = (
        "data_dir",
        "split",
        "num_images",
        "accuracy",
        "top_k",
        "top_k_accuracy",
        "class_names",
        "per_class",
        "macro_avg",
        "weighted_avg",
    )
    summary = {key: report[key] for key in keep}
    summary["num_training_images"] = report.get("num_training_images")
    summary["most_confused"] = [
        {"true": true, "predicted": pred, "count": count}
        for true, pred, count in most_confused(report)
    ]
    if run is not None:
        summary["run"] = {
            "path": run.path,
            "backbone": run.config.get("backbone"),
            "image_size": list(run.image_size),
        }
    summary["warning"] = _training_data_warning(report)
    return summary


def _training_data_warning(report: dict) -> str | None:
    """Warns when the evaluated images include ones the run recorded as training images.

    `evaluate` counts them against the run's recorded split (`num_training_images`), so the
    warning does not depend on how the data folder's path was spelled, and it counts them in
    a folder that is not the run's own too (a copy of it with files added or removed).
    """
    count = report.get("num_training_images")
    if not count:
        return None
    return (
        f"These images include the ones the model was trained on ({count} of the "
        f"{report['num_images']} are in the run's recorded training split), so the numbers "
        "are optimistic. For an honest measure, evaluate on images it has never seen: a test/ "
        "folder, or the run's own folder without --split (its held-out validation images)."
    )


def _predictions_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "true", "predicted", "probability", "loss", "correct"])
    names = report["class_names"]
    for path, true, pred, probabilities, loss in zip(
        report["paths"],
        report["y_true"],
        report["y_pred"],
        report["probabilities"],
        report["losses"],
        strict=True,
    ):
        probability = f"{probabilities[pred]:.6f}"
        writer.writerow([path, names[true], names[pred], probability, f"{loss:.6f}", true == pred])
    return out.getvalue()


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def write_report(run: Run, report: dict, out_dir, *, num_top_losses: int = 16) -> str:
    """Writes the evaluation report folder (see the module docstring).

    Args:
        run: The `Run` that was evaluated (its training history and settings go in the page).
        report: The dict returned by `tlkeras.evaluate` for that run.
        out_dir: The folder to write; created if missing, files in it are replaced.
        num_top_losses: How many images the top-losses grid shows. Defaults to 16.

    Returns:
        The path of `report.html`.

    Example:
        >>> write_report(run, tl.evaluate(run, "data/flowers"), "reports/flowers")
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    summary = report_metrics(report, run=run)
    atomic_write(os.path.join(out_dir, METRICS_FILE), _json(summary))
    confusion = {
        "class_names": report["class_names"],
        "rows": "true class",
        "columns": "predicted class",
        "counts": report["confusion_matrix"],
        "normalized": report["confusion_matrix_normalized"],
    }
    atomic_write(os.path.join(out_dir, CONFUSION_FILE), _json(confusion))
    atomic_write(os.path.join(out_dir, PREDICTIONS_FILE), _predictions_csv(report))

    figures = {
        "confusion_matrix.png": plots.plot_confusion_matrix(report),
        "confusion_matrix_normalized.png": plots.plot_confusion_matrix(report, normalize=True),
        "per_class.png": plots.plot_per_class(report),
    }
    if num_top_losses and report["num_images"]:
        figures["top_losses.png"] = plots.plot_top_losses(report, num_images=num_top_losses)
    if run.history.get("loss"):
        figures["history.png"] = plots.plot_history(run.history)
    pngs = {}
    for name, figure in figures.items():
        pngs[name] = plots.figure_to_png(figure)
        atomic_write(os.path.join(out_dir, name), pngs[name])

    page = render_html(summary, report, pngs, num_top_losses=num_top_losses)
    path = os.path.join(out_dir, REPORT_FILE)
    atomic_write(path, page)
    return path


# -- the HTML page -----------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em;
       color: #1f2328; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em;
       margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f6f8fa; }
.big { font-size: 1.6em; font-weight: 600; }
.muted { color: #59636e; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.cards { display: flex; gap: 2em; flex-wrap: wrap; }
.warning { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.5em 0.8em; }
.bar { display: inline-block; height: 0.7em; background: #4c8ed9; vertical-align: middle; }
"""


def _img(pngs: dict, name: str, alt: str) -> str:
    if name not in pngs:
        return ""
    data = base64.b64encode(pngs[name]).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _per_class_table(summary: dict) -> str:
    e = html.escape
    rows = []
    for name in summary["class_names"]:
        row = summary["per_class"][name]
        bar = f'<span class="bar" style="width:{row["recall"] * 6:.2f}em"></span>'
        rows.append(
            f"<tr><td>{e(name)}</td><td>{row['precision']:.3f}</td><td>{row['recall']:.3f} "
            f"{bar}</td><td>{row['f1-score']:.3f}</td><td>{row['support']:.0f}</td></tr>"
        )
    for label, key in (("macro average", "macro_avg"), ("weighted average", "weighted_avg")):
        row = summary[key]
        rows.append(
            f"<tr><td><i>{label}</i></td><td>{row['precision']:.3f}</td>"
            f"<td>{row['recall']:.3f}</td><td>{row['f1-score']:.3f}</td>"
            f"<td>{row['support']:.0f}</td></tr>"
        )
    return (
        "<table><thead><tr><th>class</th><th>precision</th><th>recall (= class accuracy)</th>"
        "<th>F1</th><th>images</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _confused_table(summary: dict, limit: int = 15) -> str:
    pairs = summary["most_confused"][:limit]
    if not pairs:
        return "<p>No mistakes: every image was classified correctly.</p>"
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(p['true'])}</td><td>{e(p['predicted'])}</td><td>{p['count']}</td></tr>"
        for p in pairs
    )
    return (
        "<table><thead><tr><th>true class</th><th>predicted as</th><th>images</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _top_losses_table(report: dict, num_images: int) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(row['path'])}</td><td>{e(row['true'])}</td><td>{e(row['predicted'])}</td>"
        f"<td>{row['probability']:.3f}</td><td>{row['loss']:.3f}</td></tr>"
        for row in top_losses(report, num_images=num_images)
    )
    return (
        "<details><summary>As a table</summary><table><thead><tr><th>file</th><th>true</th>"
        "<th>predicted</th><th>probability</th><th>loss</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )


def render_html(summary: dict, report: dict, pngs: dict, *, num_top_losses: int = 16) -> str:
    """Builds the self-contained report page from the metrics and the PNG bytes by file name."""
    e = html.escape
    run = summary.get("run", {})
    title = f"Evaluation of {run.get('path', 'a model')}"
    top_k = ""
    if summary["top_k_accuracy"] is not None:
        top_k = (
            f'<div><div class="big">{summary["top_k_accuracy"]:.1%}</div>'
            f'<div class="muted">top-{summary["top_k"]} accuracy</div></div>'
        )
    details = (
        f"backbone {e(str(run.get('backbone')))}, input {run['image_size'][0]}x"
        f"{run['image_size'][1]}, "
        if run
        else ""
    )
    sections = [
        f"<h1>{e(title)}</h1>",
        f'<p class="muted">{details}data {e(summary["data_dir"])}, '
        f"split <b>{e(summary['split'])}</b>, "
        f"{summary['num_images']} images, {len(summary['class_names'])} classes. Images were "
        "evaluated in sorted file order.</p>",
        f'<p class="warning">Warning: {e(summary["warning"])}</p>' if summary["warning"] else "",
        '<div class="cards">'
        f'<div><div class="big">{summary["accuracy"]:.1%}</div>'
        '<div class="muted">accuracy</div></div>'
        f"{top_k}"
        f'<div><div class="big">{summary["macro_avg"]["f1-score"]:.3f}</div>'
        '<div class="muted">macro-average F1</div></div></div>',
    ]
    if "history.png" in pngs:
        sections += [
            "<h2>How it trained</h2>",
            '<p class="muted">Loss and accuracy per epoch. The dotted line marks where '
            "fine-tuning starts. Validation loss rising while training loss falls means "
            "over-fitting.</p>",
            _img(pngs, "history.png", "training curves"),
        ]
    sections += [
        "<h2>Per class</h2>",
        '<p class="muted">Precision: of the images predicted as this class, the fraction that '
        "are. Recall: of the images of this class, the fraction found.</p>",
        _per_class_table(summary),
        _img(pngs, "per_class.png", "per-class precision, recall and F1"),
        "<h2>Confusion matrix</h2>",
        '<p class="muted">Rows are the true classes, columns the predicted ones; the diagonal '
        "holds the correct predictions.</p>",
        _img(pngs, "confusion_matrix.png", "confusion matrix, counts"),
        _img(pngs, "confusion_matrix_normalized.png", "confusion matrix, normalised by row"),
        "<h2>Most confused</h2>",
        _confused_table(summary),
    ]
    if "top_losses.png" in pngs:
        sections += [
            "<h2>Top losses</h2>",
            '<p class="muted">The images the model got most wrong, shown as the model saw them: '
            "true class, predicted class with its probability, and the loss. Look for "
            "mislabelled images here.</p>",
            _img(pngs, "top_losses.png", "top losses"),
            _top_losses_table(report, num_top_losses),
        ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n"
        '<p class="muted">Written by tlkeras. This page is self-contained: the pictures are '
        "embedded, so it works offline.</p>\n</body></html>\n"
    )
