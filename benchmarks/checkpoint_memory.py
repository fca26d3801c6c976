"""Resident memory kept per call of what a run does each epoch, each in a fresh process, side by side.

    python benchmarks/checkpoint_memory.py [--times 200] [--modes checkpoint save weights bare_save h5py read config]

Each mode repeats one operation `--times` times on the reference's VAE (compiled with
Adam and built, as a run's model is), after 20 warm-up calls, and prints the growth of
the process's resident memory per call and the growth tracemalloc sees in Python
objects:

    checkpoint vae_keras.run_folder.model_bytes (what each epoch's checkpoint does)
    save       keras' saving_lib.save_model to a BytesIO, as Keras does it alone
    weights    saving_lib.save_weights_only to a .weights.h5 file
    bare_save  save_model of a VAE that was never compiled (no optimizer state)
    h5py       the same weights, as NumPy arrays, through h5py into a BytesIO
    read       the weights read into NumPy arrays
    config     keras.saving.serialize_keras_object(model)

Found on 2026-12-03 (TensorFlow 2.21, Keras 3.15.1, 200 calls): save 84 KB a call,
weights 80, bare_save 13, h5py 0, read 0, config 0.6; Python objects 0.6 KB a call.
The cause (2026-12-04): Keras' `get_attr_skipset` stores its cache under
"saving_attr_skipset_..." and reads "saving_attr_skiplist_...", so each save builds
reference objects (an `Optimizer(1.0)`, Layers, Metrics) whose native memory stays.
`model_bytes` fills the key Keras reads; its row is the fix's figure.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import gc, io, json, os, sys, tempfile, tracemalloc
import numpy as np
import h5py
import keras
import vae_keras
from keras.src.saving import saving_lib
from vae_keras import run_folder

mode, times = sys.argv[1], int(sys.argv[2])
model = vae_keras.VAE()
model.compile(optimizer="adam")
model.optimizer.build(model.trainable_variables)
model.generate(2, seed=0)
bare = vae_keras.VAE()
folder = tempfile.mkdtemp()


def once():
    if mode == "checkpoint":
        run_folder.model_bytes(model)
    elif mode == "save":
        saving_lib.save_model(model, io.BytesIO())
    elif mode == "weights":
        saving_lib.save_weights_only(model, os.path.join(folder, "x.weights.h5"))
    elif mode == "bare_save":
        saving_lib.save_model(bare, io.BytesIO())
    elif mode == "h5py":
        with h5py.File(io.BytesIO(), "w") as file:
            for index, weight in enumerate(model.weights):
                file.create_dataset(str(index), data=np.asarray(weight))
    elif mode == "read":
        [np.asarray(weight) for weight in model.weights]
    elif mode == "config":
        keras.saving.serialize_keras_object(model)


def resident_mb():
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


for _ in range(20):
    once()
gc.collect()
tracemalloc.start()
traced, start = tracemalloc.get_traced_memory()[0], resident_mb()
for _ in range(times):
    once()
gc.collect()
print(json.dumps({"mode": mode, "kb_per_call": (resident_mb() - start) * 1024 / times,
                  "python_kb_per_call": (tracemalloc.get_traced_memory()[0] - traced) / 1024 / times}))
"""

MODES = ("checkpoint", "save", "weights", "bare_save", "h5py", "read", "config")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=200, help="calls per mode, after 20 warm-up calls")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args()
    print(f"{'mode':>10} {'KB a call':>10} {'Python KB a call':>17}")
    for mode in args.modes:
        process = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.times)], capture_output=True, text=True)
        if process.returncode:
            print(f"{mode:>10} failed:\n{process.stderr[-2000:]}")
            continue
        result = json.loads(process.stdout.strip().splitlines()[-1])
        print(f"{mode:>10} {result['kb_per_call']:>10.1f} {result['python_kb_per_call']:>17.1f}", flush=True)


if __name__ == "__main__":
    main()
