"""Executes the six notebooks full-length, in order, and stores them with their outputs.

Usage, from the repository root, with the project's virtual environment active:

    python tools/execute_notebooks.py

The notebooks run as a reader runs them in JupyterLab (VAE_KERAS_QUICK unset,
so notebook 3 trains the full 50 epochs), in the kernel of the Python that runs
this script, with the notebooks' folder as the working directory. Each is
written back in place after it ran, so the repository shows the outputs on
GitHub. The run folders of notebooks 3, 5 and 6 (runs/notebook/, runs/beyond/,
runs/own/) are deleted first so that they really train instead of loading earlier runs
(--keep-run keeps them).
Notebook 3 prints the machine it ran on; each notebook's metadata also records
when and where it was executed, under "vae_keras".

On the project's 2-core CPU (2026-12-06, beside other work) the six took 57 minutes:
21 for notebook 3 with its training, 29 for notebook 5 with its five runs and the
autoencoder, under 4 for notebook 6.
A notebook that fails is written with its error and the script stops with
exit status 1.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = (
    "01_data.ipynb",
    "02_architecture.ipynb",
    "03_training.ipynb",
    "04_visualization.ipynb",
    "05_beyond_the_reference.ipynb",
    "06_your_own_images.ipynb",
)
# The run folders of the notebooks that train (full run); deleted before they run unless --keep-run.
RUN_DIRS = {
    "03_training.ipynb": REPO / "runs" / "notebook",
    "05_beyond_the_reference.ipynb": REPO / "runs" / "beyond",
    "06_your_own_images.ipynb": REPO / "runs" / "own",
}
# The name of the kernel spec written for this Python (see `_kernel_for_this_python`).
KERNEL_NAME = "vae-keras-execute"
# The output of a live ipywidget: reopened without its kernel, JupyterLab shows "Error displaying widget:
# model not found" for it, in preference to the static image stored beside it.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def main(argv=None):
    """Parses the arguments and executes the notebooks; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "notebooks", nargs="*", default=list(NOTEBOOKS),
        help="notebook file names in notebooks/ (default: all six, in order)",
    )
    parser.add_argument(
        "--keep-run", action="store_true",
        help="keep runs/notebook and runs/beyond (notebooks 3 and 5 then load finished runs instead of training)",
    )
    parser.add_argument(
        "--timeout", type=int, default=None,
        help="seconds allowed per cell (default: no limit)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.notebooks if not (REPO / "notebooks" / name).is_file()]
    if unknown:
        parser.error(f"no such notebook in {REPO / 'notebooks'}: {', '.join(unknown)}")

    # As in JupyterLab: full length, inline figures.
    os.environ.pop("VAE_KERAS_QUICK", None)
    os.environ.pop("MPLBACKEND", None)
    with tempfile.TemporaryDirectory() as jupyter_dir:
        _kernel_for_this_python(Path(jupyter_dir))
        for name in args.notebooks:
            run_dir = RUN_DIRS.get(name)
            if run_dir is not None and not args.keep_run and run_dir.exists():
                print(f"Deleting {run_dir.relative_to(REPO)} so that {name} trains afresh.", flush=True)
                shutil.rmtree(run_dir)
            if not execute(REPO / "notebooks" / name, timeout=args.timeout):
                return 1
    return 0


def execute(path, timeout=None):
    """Runs one notebook top to bottom and writes it back with its outputs.

    Args:
        path: the notebook file.
        timeout: seconds allowed per cell; None: no limit.

    Returns:
        True when every cell ran, False when one raised (the notebook is
        written anyway, with the error in that cell's output).
    """
    notebook = nbformat.read(path, as_version=4)
    kernelspec = notebook.metadata.get("kernelspec")
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(path.parent)}},
    )
    print(f"Executing {path.relative_to(REPO)} ...", flush=True)
    start = time.perf_counter()
    succeeded = True
    try:
        client.execute()
    except CellExecutionError as error:
        succeeded = False
        print(f"{path.name} failed:\n{error}", file=sys.stderr)
    seconds = time.perf_counter() - start
    if kernelspec is not None:
        notebook.metadata["kernelspec"] = kernelspec  # the stored notebook keeps the usual kernel
    notebook.metadata["vae_keras"] = {
        "executed_by": "tools/execute_notebooks.py",
        "executed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    _static_widgets(notebook)
    nbformat.write(notebook, path)
    print(f"  {'done' if succeeded else 'FAILED'} in {seconds:.0f} s, written to {path.relative_to(REPO)}", flush=True)
    return succeeded


def _static_widgets(notebook):
    """Keeps only the static figure of each widget that has one, and no widget state once no widget is left:
    the stored notebook, reopened in JupyterLab or read on GitHub, shows the explorers' figures."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data and "image/png" in data:
                del data[WIDGET_VIEW]
    if not any(WIDGET_VIEW in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", [])):
        notebook.metadata.pop("widgets", None)


def _kernel_for_this_python(jupyter_dir):
    """Writes a kernel spec that starts this very Python, and puts it first on JUPYTER_PATH."""
    spec_dir = jupyter_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {platform.python_version()} ({sys.prefix})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(jupyter_dir), os.environ.get("JUPYTER_PATH")])
    )


if __name__ == "__main__":
    sys.exit(main())
