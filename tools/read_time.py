"""Estimates how long the stored notebooks take to read, from what a reader reads in them.

Usage, from the repository root:

    python tools/read_time.py                 # the notebooks as they are in notebooks/
    python tools/read_time.py --commit c1d71d0  # as stored at a commit, to compare

It counts, per notebook, the words of the Markdown cells, the non-empty lines of the code
cells, the figures and the lines of text output, and prices them at fixed rates: prose at
200 words a minute (silent reading of non-fiction is about 240, Brysbaert 2019; text with
formulas is slower), 4 s a line of code, 30 s a figure, 1 s a line of output. The rates are
a model, not a stopwatch: compare commits with it (the same rates price both), and set the
absolute figure against a real reader's time where there is one.
"""

import argparse
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("01_data", "02_architecture", "03_training", "04_visualization", "05_beyond_the_reference",
             "06_your_own_images")
WORDS_PER_MINUTE, SECONDS_PER_CODE_LINE, SECONDS_PER_FIGURE, SECONDS_PER_OUTPUT_LINE = 200, 4, 30, 1


def counts(notebook):
    """(prose words, code lines, figures, output lines) of a notebook's JSON."""
    words = code = figures = output_lines = 0
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            words += len(source.split())
        elif cell["cell_type"] == "code":
            code += sum(1 for line in source.splitlines() if line.strip())
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if "image/png" in data:
                    figures += 1
                else:
                    text = output.get("text") or data.get("text/markdown") or data.get("text/plain") or ""
                    output_lines += len("".join(text).splitlines())
    return words, code, figures, output_lines


def minutes(words, code, figures, output_lines):
    seconds = code * SECONDS_PER_CODE_LINE + figures * SECONDS_PER_FIGURE + output_lines * SECONDS_PER_OUTPUT_LINE
    return words / WORDS_PER_MINUTE + seconds / 60


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", help="read the notebooks as stored at this git commit")
    args = parser.parse_args(argv)
    print("| notebook | prose words | code lines | figures | output lines | minutes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    totals = {5: [0, 0, 0, 0], 6: [0, 0, 0, 0]}  # notebooks 1 to 5 (the walk and beyond), 1 to 6
    for name in NOTEBOOKS:
        path = f"notebooks/{name}.ipynb"
        if args.commit:
            shown = subprocess.run(["git", "show", f"{args.commit}:{path}"], cwd=REPO, capture_output=True,
                                   text=True)
            if shown.returncode:
                continue  # not in that commit
            notebook = json.loads(shown.stdout)
        else:
            notebook = json.loads((REPO / path).read_text())
        row = counts(notebook)
        for last in totals:
            if int(name[:2]) <= last:
                totals[last] = [a + b for a, b in zip(totals[last], row)]
        print(f"| {name} | {row[0]:,} | {row[1]} | {row[2]} | {row[3]} | {minutes(*row):.0f} |")
    for last, row in totals.items():
        print(f"| notebooks 1-{last} | {row[0]:,} | {row[1]} | {row[2]} | {row[3]} | {minutes(*row):.0f} |")


if __name__ == "__main__":
    main()
