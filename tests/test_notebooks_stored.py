"""The notebooks are stored with the outputs of a full run: every code cell has output, none an error or noise.

The outputs are made by `python tools/execute_notebooks.py` (see its docstring);
run it again after changing a notebook.
"""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
REGENERATE = "regenerate the stored outputs with `python tools/execute_notebooks.py`"
# TensorFlow's start-up and runtime notices that must not reach the reader.
TENSORFLOW_NOISE = (
    "cuInit",
    "oneDNN",
    "cpu_feature_guard",
    "cudart_stub",
    "use_unbounded_threadpool",
    "absl::InitializeLog",
    "retracing",
)


def code_cells(path):
    """The code cells of a notebook, with their index among all cells."""
    notebook = nbformat.read(path, as_version=4)
    return [(index, cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]


def stream_text(cell):
    """Everything the cell wrote to stdout and stderr."""
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


def test_the_six_notebooks_are_found():
    assert [path.name for path in NOTEBOOKS] == [
        "01_data.ipynb", "02_architecture.ipynb", "03_training.ipynb", "04_visualization.ipynb",
        "05_beyond_the_reference.ipynb", "06_your_own_images.ipynb",
    ]


# Code cells that only define things (the forty-line VAE, the set-up) print nothing by design.
SILENT_CELLS = {"03_training.ipynb": {2, 7}, "05_beyond_the_reference.ipynb": {4, 20}}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_code_cell_ran_in_order_and_shows_its_output(path):
    cells = code_cells(path)
    counts = [cell.execution_count for _, cell in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: execution counts {counts}; {REGENERATE}"
    empty = [index for index, cell in cells if not cell.outputs and index not in SILENT_CELLS.get(path.name, ())]
    assert not empty, f"{path.name}: code cells {empty} (counted from 0) have no output; {REGENERATE}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_cell_holds_an_error(path):
    errors = [
        f"cell {index}: {output.ename}: {output.evalue}"
        for index, cell in code_cells(path)
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, f"{path.name}: " + "; ".join(errors)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_no_tensorflow_noise_in_the_outputs(path):
    noisy = [
        f"cell {index}: {word!r}"
        for index, cell in code_cells(path)
        for word in TENSORFLOW_NOISE
        if word in stream_text(cell)
    ]
    assert not noisy, f"{path.name}: TensorFlow notices in the outputs: {', '.join(noisy)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_figure_is_an_image(path):
    # A figure shown without inline display leaves only its text, "<Figure size ...>".
    bare = [
        index
        for index, cell in code_cells(path)
        for output in cell.outputs
        if output.output_type in ("execute_result", "display_data")
        and output.data.get("text/plain", "").startswith("<Figure size")
        and "image/png" not in output.data
    ]
    assert not bare, f"{path.name}: cells {bare} show a figure as text, not as an image"


def test_notebook_3_is_stored_from_the_full_run():
    cells = code_cells(NOTEBOOK_DIR / "03_training.ipynb")
    text = "".join(stream_text(cell) for _, cell in cells)
    assert "The run's folder: runs/notebook\n" in text, "notebook 3 was stored from a quick run"
    assert "Epoch : 50 Test ELBO loss" in text, "notebook 3's stored outputs do not reach epoch 50"
    assert "CPU: " in text and " cores" in text, "notebook 3 does not name the machine it ran on"


def test_notebook_4_is_stored_from_the_full_run():
    text = "".join(stream_text(cell) for _, cell in code_cells(NOTEBOOK_DIR / "04_visualization.ipynb"))
    assert "Full run" in text and "Quick run" not in text
    assert "k = 1000" in text, "notebook 4's IWAE section did not run to k = 1000"


def test_notebook_5_is_stored_from_the_full_run():
    cells = code_cells(NOTEBOOK_DIR / "05_beyond_the_reference.ipynb")
    text = "".join(stream_text(cell) for _, cell in cells)
    assert "Full run: experiments of 10 epochs" in text and "Quick run" not in text
    # Its explorers are stored as their static figures alone (tools/execute_notebooks.py): a stored widget view
    # reopened without its kernel shows "Error displaying widget: model not found" in JupyterLab.
    explorers = [
        output for _, cell in cells for output in cell.outputs
        if output.get("data", {}).get("text/plain", "").startswith("LatentExplorer(")
    ]
    assert len(explorers) == 2 and all(set(output["data"]) == {"image/png", "text/plain"} for output in explorers)
    assert not any("application/vnd.jupyter.widget-view+json" in output.get("data", {})
                   for _, cell in cells for output in cell.outputs)


def test_notebook_6_is_stored_from_the_full_run_and_its_prose_holds():
    text = "".join(stream_text(cell) for _, cell in code_cells(NOTEBOOK_DIR / "06_your_own_images.ipynb"))
    assert "Full run: 100 epochs on the digits, 30 on the photographs" in text and "Quick run" not in text
    # "learns to ignore the code": the Gaussian run uses no unit, the Bernoulli one several, the photographs' too.
    units = [int(count) for count in re.findall(r"active units: (\d+) of 20", text)]
    assert len(units) == 3 and units[0] == 0 and units[1] >= 5 and units[2] >= 5, units
    notebook = nbformat.read(NOTEBOOK_DIR / "06_your_own_images.ipynb", as_version=4)
    prose = " ".join(" ".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown").split())
    assert f"the Bernoulli model uses {units[1]} of its 20 dimensions" in prose
    # "The stored run took under four minutes"
    assert "The stored run took under four minutes" in prose and notebook.metadata["vae_keras"]["seconds"] < 240
    # "The test ELBO loss above is that average image's loss" (to a hundredth of a nat).
    average = float(re.search(r"the average image's loss: 8x8 digits ([\d.]+)", text).group(1))
    final = float(re.search(r"the 8x8 model's test ELBO loss: ([\d.]+)", text).group(1))
    assert abs(final - average) <= 0.02, (final, average)
    # "on MNIST's 784 pixels it is 26 nats per image, and the reference's model saves 15 of them for 7 nats of KL"
    mnist = float(re.search(r"MNIST ([\d.]+) nats per image", text).group(1))
    saved, kl = map(float, re.search(r"the code saves ([\d.]+) nats of reconstruction for ([\d.]+) of KL", text).groups())
    assert round(mnist) == 26 and round(saved) == 15 and round(kl) == 7, (mnist, saved, kl)


def test_notebook_3_shows_the_packages_train_step_as_models_py_writes_it():
    import inspect
    import textwrap

    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the notebook shows TensorFlow's step")
    import vae_keras

    notebook = nbformat.read(NOTEBOOK_DIR / "03_training.ipynb", as_version=4)
    shown = next(cell.source for cell in notebook.cells if cell.source.startswith("### The package's `train_step`"))
    snippet = shown.split("```python\n")[1].split("```")[0]
    assert snippet == textwrap.dedent(inspect.getsource(vae_keras.VAE.train_step))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_markdown_table_has_as_many_separators_as_header_cells(path):
    # A table whose separator row counts other than its header renders as raw text in JupyterLab.
    notebook = nbformat.read(path, as_version=4)
    texts = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    texts += [
        "".join(output["data"]["text/markdown"])
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.outputs if "text/markdown" in output.get("data", {})
    ]
    separator = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")
    bad = [
        header
        for text in texts
        for header, below in zip(text.splitlines(), text.splitlines()[1:])
        if header.startswith("|") and separator.match(below.strip()) and header.strip().count("|") != below.strip().count("|")
    ]
    assert not bad, f"{path.name}: tables whose separator row does not match the header: {bad}"
