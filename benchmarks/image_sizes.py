"""One epoch of training at several image shapes, side by side: the networks' size and the time.

    python benchmarks/image_sizes.py [--images 6000] [--epochs 2] [--shapes 28x28x1 32x32x3 64x64x3]

For each shape, `--images` images (90 % trained on, 10 % held out, as `load_images`
splits them) are cut from scikit-learn's two sample photographs (installed with it,
nothing downloaded): random square patches, resized to the shape, grey where it has
one channel. Each shape trains with `vae_keras.train` (the reference's settings,
batch size 128, in-process, on the current backend) for `--epochs` epochs; the
first epoch holds the compilation. Printed: the encoder's and decoder's parameters,
the first epoch and the median of the others (seconds, and milliseconds per image),
each epoch's test ELBO loss, and the time per image relative to the first shape.
"""

import argparse
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

import vae_keras


def patches(n, shape, seed=0):
    """`n` float32 images of `shape` (H, W, C) in [0, 1], random square crops of the two sample photographs."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640x3 uint8 photographs
    rng = np.random.default_rng(seed)
    height, width, channels = shape
    out = np.empty((n, height, width, channels), "float32")
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(rng.integers(max(height, width), min(photo.shape[:2]) // 2 + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        image = Image.fromarray(photo[top : top + side, left : left + side]).resize((width, height), Image.LANCZOS)
        if channels == 1:
            image = image.convert("L")
        out[i] = np.asarray(image, "float32").reshape(height, width, channels) / 255.0
    return out


def main():
    import keras

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6_000, help="images per shape (90 %% trained on)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per shape (the first holds the compilation)")
    parser.add_argument("--shapes", nargs="+", default=["28x28x1", "32x32x3", "64x64x3"])
    args = parser.parse_args()

    class Times(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    rows = []
    for text in args.shapes:
        shape = tuple(int(part) for part in text.split("x"))
        x = patches(args.images, shape)
        held_out = args.images // 10
        data = ((x[held_out:], None), (x[:held_out], None))
        config = vae_keras.VAEConfig(image_shape=shape, batch_size=128, epochs=args.epochs)
        times = Times()
        times.seconds = []
        with tempfile.TemporaryDirectory() as folder:
            result = vae_keras.train(config, output_dir=folder, data=data, verbose=0, callbacks=[times])
        model = result.model
        rest = times.seconds[1:] or times.seconds
        row = {
            "shape": text,
            "encoder": model.encoder.count_params(),
            "decoder": model.decoder.count_params(),
            "first_s": times.seconds[0],
            "epoch_s": statistics.median(rest),
            "ms_per_image": 1_000 * statistics.median(rest) / len(data[0][0]),
            "test_elbo": [round(value, 2) for value in result.history["val_elbo"]],
        }
        rows.append(row)
        print(row, flush=True)

    print(f"\n{args.images - args.images // 10:,} training images per shape, batch size 128, backend "
          f"{keras.backend.backend()}")
    print(f"{'shape':>9} {'encoder':>10} {'decoder':>10} {'epoch 1 s':>10} {'epoch s':>8} {'ms/image':>9} {'ratio':>6}")
    for row in rows:
        ratio = row["ms_per_image"] / rows[0]["ms_per_image"]
        print(f"{row['shape']:>9} {row['encoder']:>10,} {row['decoder']:>10,} {row['first_s']:>10.1f} "
              f"{row['epoch_s']:>8.1f} {row['ms_per_image']:>9.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
