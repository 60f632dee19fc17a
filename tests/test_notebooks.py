"""Every tutorial notebook and lab runs headless, top to bottom, in quick mode."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
LABS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "labs", "*.ipynb")))


def execute(path):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(path)}},
    )
    env = {"TLKERAS_QUICK": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    # The kernel imports this checkout's tlkeras, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        client.execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def check_outputs(notebook) -> list[str]:
    """What each exercise-checker cell (tagged `check`) printed."""
    return [
        "".join(output.get("text", "") for output in cell.outputs)
        for cell in notebook.cells
        if "check" in cell.metadata.get("tags", [])
    ]


def test_there_are_five_notebooks_and_two_labs():
    assert [os.path.basename(p)[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    assert len(LABS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS + LABS, ids=os.path.basename)
def test_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow  # Starts a Jupyter kernel.
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_its_checks_pass(path):
    for printed in check_outputs(execute(path)):
        assert printed.startswith("Correct:"), printed


@pytest.mark.slow  # Starts a Jupyter kernel.
@pytest.mark.parametrize("path", LABS, ids=os.path.basename)
def test_lab_runs_and_its_checkers_ask_for_the_todos(path):
    printed = check_outputs(execute(path))
    assert printed and all(text.startswith("Not yet:") for text in printed), printed


def test_labs_are_in_sync_with_the_solutions(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_labs", os.path.join(ROOT, "notebooks", "labs", "make_labs.py")
    )
    make_labs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_labs)
    for path in make_labs.main(str(tmp_path)):
        committed = os.path.join(ROOT, "notebooks", "labs", os.path.basename(path))
        assert nbformat.read(path, 4) == nbformat.read(committed, 4), "run make_labs.py"
