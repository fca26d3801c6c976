"""Time per training step of vae_keras on each installed Keras backend, side by side.

    python benchmarks/backend_steps.py [--steps 4] [--windows 3] [--backends tensorflow jax torch]

Each backend runs in its own process (a backend is fixed once Keras is
imported), one after another, on the same 512-image batches of MNIST, with the
run `train` builds (`training.build_run`, "auto" settings). A warm-up window (compilation) is left
out; the median and the fastest of the timed windows are printed, then a table
and the ratios to TensorFlow.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

from vae_keras.backends import BACKENDS

CHILD = """
import json, sys, time
import vae_keras
from vae_keras import backends, training
steps, windows = int(sys.argv[1]), int(sys.argv[2])
run = training.build_run(vae_keras.VAEConfig(train_size=512 * steps), verbose=0)
seconds = []
for window in range(windows + 1):  # window 0: compilation and warm-up
    start = time.perf_counter()
    run.fit(epochs=1, validate=False, verbose=0)
    seconds.append((time.perf_counter() - start) / steps)
print(json.dumps({"backend": backends.BACKEND, "device": run.device, "jit_compile": run.model.jit_compile,
                  "steps_per_execution": run.model.steps_per_execution, "warmup_s": seconds[0] * steps,
                  "step_s": seconds[1:]}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="steps (batches of 512) per window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per backend")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args()
    results = []
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed, skipped")
            continue
        env = {**os.environ, "KERAS_BACKEND": backend}
        process = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.steps), str(args.windows)],
            env=env, capture_output=True, text=True,
        )
        if process.returncode:
            print(f"{backend}: failed\n{process.stderr[-2000:]}")
            continue
        result = json.loads(process.stdout.strip().splitlines()[-1])
        print(json.dumps(result))
        results.append(result)
    print("\n| backend | device | jit_compile | steps/execution | warm-up s | ms/step median | ms/step fastest |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['device']} | {r['jit_compile']} | {r['steps_per_execution']} | "
              f"{r['warmup_s']:.1f} | {1000 * statistics.median(r['step_s']):.0f} | {1000 * min(r['step_s']):.0f} |")
    base = next((r for r in results if r["backend"] == "tensorflow"), None)
    if base:
        for r in results:
            if r is not base:
                print(f"{r['backend']} / tensorflow time per step (medians): "
                      f"{statistics.median(r['step_s']) / statistics.median(base['step_s']):.1f}x")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
