"""Writes the lab (exercise) versions of the tutorial notebooks into this folder.

The main notebooks in `notebooks/` are the solutions. In them, a code cell tagged `exercise`
holds the answer and carries, in its metadata (`lab_todo`), the stub a student starts from;
the cell after it, tagged `check`, calls a `tl.labs.check_*` function that prints whether the
answer is right and what is wrong. A lab is the main notebook with every exercise cell
replaced by its stub, so it runs top to bottom and its checkers say "Not yet" until the
student fills the TODOs in.

Run it after editing a main notebook:

    python notebooks/labs/make_labs.py
"""

from __future__ import annotations

import copy
import os
import sys

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = os.path.dirname(HERE)


def lab_from_solution(solution: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """Returns the lab version of a solution notebook, or None if it has no exercises."""
    lab = copy.deepcopy(solution)
    exercises = [cell for cell in lab.cells if "exercise" in cell.metadata.get("tags", [])]
    if not exercises:
        return None
    for cell in exercises:
        cell.source = cell.metadata["lab_todo"]
        cell.metadata["tags"] = ["todo"]
        del cell.metadata["lab_todo"]
    intro = nbformat.v4.new_markdown_cell(
        "**Lab version.** Fill in every cell marked `TODO`, then run the check below it. "
        "The solutions are in the notebook of the same name one folder up."
    )
    intro.id = "lab-intro"  # fixed, so regenerating gives the same file
    lab.cells.insert(1, intro)
    return lab


def main(out_dir: str = HERE) -> list[str]:
    """Writes `<name>_lab.ipynb` for every main notebook with exercises; returns the paths."""
    written = []
    for name in sorted(os.listdir(NOTEBOOKS)):
        if not name.endswith(".ipynb"):
            continue
        lab = lab_from_solution(nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4))
        if lab is not None:
            path = os.path.join(out_dir, name.replace(".ipynb", "_lab.ipynb"))
            nbformat.write(lab, path)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in main(*sys.argv[1:]):
        print(f"wrote {path}")
