"""Training throughput of vae_keras beside a plain keras.io-style VAE, in alternating windows.

Run from the repository root with the project's environment:

    python benchmarks/train_throughput.py            # 6 windows of 10 steps each
    python benchmarks/train_throughput.py --quick    # 2 windows of 2 steps: a smoke test, figures meaningless

Three spawned child processes, each with its own TensorFlow runtime: vae_keras
through `build_run` and `Run.fit` as `train` trains it, in float32 and in mixed
bfloat16, and keras.io's VAE example on the package's encoder and decoder.
After one untimed warm-up window each, the parent asks for measured windows in
turn, so that a slow spell of a shared machine falls on all. It prints the
machine, every window, per implementation the median ms/step, images/s, s per
117-step epoch and peak RSS, per-window-pair ratios, a markdown table and two
speed ratio lines; it asserts nothing. See benchmarks/README.md.
"""

import argparse
import contextlib
import multiprocessing
import os
import resource
import statistics
import sys
import time
import traceback

BATCH_SIZE = 512
EPOCH_STEPS = 60_000 // BATCH_SIZE  # 117 full batches per epoch, as the reference
PRECISION = {"vae_keras": "float32", "vae_keras_bf16": "mixed_bfloat16"}  # the vae_keras children
ANSWER_TIMEOUT_S = 900  # how long the parent waits for one answer of a child
LOAD_AVERAGE = "Load average (1, 5, 15 min) at %s: %.2f, %.2f, %.2f"


def main(argv=None):
    args = _parse_args(argv)
    names = [name for name in (*PRECISION, "baseline") if not (args.no_bfloat16 and name == "vae_keras_bf16")]
    width = max(map(len, names))
    print("# Training throughput: vae_keras beside a plain keras.io-style VAE", flush=True)
    if args.quick:
        print("(--quick: a smoke test; the figures mean nothing)")
    workers = []
    try:
        for name in names:
            workers.append(Worker(name, args.steps))
        infos = {worker.name: worker.answer() for worker in workers}
        print("\n## Machine (as the vae_keras child sees it)")
        print(infos["vae_keras"]["machine"])
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"Cores usable by this process: {usable}")
        print(LOAD_AVERAGE % ("start", *os.getloadavg()))
        print(f"\n## Setup: the first {BATCH_SIZE * args.steps:,} MNIST training images, batches of {BATCH_SIZE}")
        for name, info in infos.items():
            print(f"{name:>{width}}: {info['how']}")

        print("\n## Warm-up (one untimed window each: traces the train step)", flush=True)
        for worker in workers:
            seconds, _ = worker.ask("window")
            print(f"{worker.name:>{width}}: {seconds:.2f} s for {args.steps} steps (not counted)", flush=True)

        print(f"\n## Measured windows: fit(epochs=1) over {args.steps} batches of {BATCH_SIZE}", flush=True)
        windows = {name: [] for name in names}
        for index in range(args.windows):
            for worker in workers:
                seconds, loss = worker.ask("window")
                windows[worker.name].append(seconds)
                print(
                    f"window {index + 1}/{args.windows} {worker.name:>{width}}: {seconds:.2f} s, "
                    f"{1000 * seconds / args.steps:.0f} ms/step, loss {loss:.2f}, "
                    f"load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        peak_rss = {worker.name: worker.ask("stop") for worker in workers}
    finally:
        for worker in workers:
            worker.close()
    _report(windows, peak_rss, args.steps, width)


def _report(windows, peak_rss, steps, width):
    """Prints the medians, the per-window-pair ratios, the markdown table and the two ratio lines."""
    step = {name: statistics.median(seconds) / steps for name, seconds in windows.items()}
    print("\n## Results (medians over the measured windows)")
    for name, seconds in windows.items():
        print(
            f"{name:>{width}}: {1000 * step[name]:.0f} ms/step (min {1000 * min(seconds) / steps:.0f}, "
            f"max {1000 * max(seconds) / steps:.0f}), {BATCH_SIZE / step[name]:.0f} images/s, "
            f"{EPOCH_STEPS * step[name]:.1f} s per {EPOCH_STEPS}-step epoch, "
            f"peak RSS {peak_rss[name] / 1024:.0f} MiB"
        )
    variants = [name for name in windows if name in PRECISION]
    for name in variants:
        ratios = [baseline / own for own, baseline in zip(windows[name], windows["baseline"])]
        print(f"per-window-pair ratios {name} / baseline (images/s): " + " ".join(f"{r:.2f}" for r in ratios))
    print(LOAD_AVERAGE % ("the end", *os.getloadavg()))

    print("\n## Table (markdown)\n")
    print(f"| implementation | ms/step | images/s | s/epoch ({EPOCH_STEPS} steps) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name in windows:
        print(
            f"| {name} | {1000 * step[name]:.0f} | {BATCH_SIZE / step[name]:.0f} | "
            f"{EPOCH_STEPS * step[name]:.1f} | {peak_rss[name] / 1024:.0f} |"
        )
    fastest = {name: min(windows["baseline"]) / min(windows[name]) for name in variants}
    medians = {name: step["baseline"] / step[name] for name in variants}
    print(
        "\nspeed ratio vae_keras / baseline from each one's fastest window (a shared machine "
        "only ever slows a window down): " + ", ".join(f"{fastest[n]:.2f}x {PRECISION[n]}" for n in variants)
    )
    print(
        "speed ratio vae_keras / baseline (images per second, medians): "
        + ", ".join(f"{medians[n]:.2f}x {PRECISION[n]}" for n in variants),
        flush=True,
    )


class Worker:
    """One long-lived spawned child running one implementation, driven over a Pipe."""

    def __init__(self, name, steps):
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_child, args=(child_end, name, steps), daemon=True)
        self.process.start()
        child_end.close()

    def answer(self):
        """The child's next message; raises RuntimeError if it failed, died or did not answer in time."""
        if not self.connection.poll(ANSWER_TIMEOUT_S):
            raise RuntimeError(f"the {self.name} child did not answer within {ANSWER_TIMEOUT_S} s")
        try:
            kind, payload = self.connection.recv()
        except EOFError:
            self.process.join(timeout=10)
            raise RuntimeError(f"the {self.name} child died (exit code {self.process.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"the {self.name} child failed:\n{payload}")
        return payload

    def ask(self, command):
        """Sends `command` ("window" or "stop") and returns the child's answer."""
        self.connection.send(command)
        return self.answer()

    def close(self):
        """Ends the child, whatever state it is in: a waiting child reads EOF and exits, a busy one is killed."""
        self.connection.close()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _child(connection, name, steps):
    """A child's life: set up one implementation, then time the windows the parent asks for."""
    try:
        os.environ["KERAS_BACKEND"] = "tensorflow"  # before Keras starts: the baseline uses tf.GradientTape
        import vae_keras

        data = vae_keras.load_mnist()
        window, info = _vae_keras(data, steps, PRECISION[name]) if name in PRECISION else _baseline(data, steps)
        connection.send(("ready", info))
        while connection.recv() == "window":
            start = time.perf_counter()
            loss = window()
            connection.send(("result", (time.perf_counter() - start, loss)))
        connection.send(("result", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))  # KiB on Linux
    except BaseException:
        with contextlib.suppress(OSError):  # the parent may be gone
            connection.send(("error", traceback.format_exc()))
        sys.exit(1)


def _vae_keras(data, steps, precision):
    """vae_keras as `train` trains it: `build_run`, then one `Run.fit` epoch of `steps` batches a window."""
    from vae_keras import VAEConfig, machine, training

    run = training.build_run(VAEConfig(train_size=BATCH_SIZE * steps, precision=precision), data=data, verbose=0)
    if run.batches.steps != steps:
        raise ValueError(f"build_run made epochs of {run.batches.steps} batches, not {steps}")
    info = {
        "machine": machine.describe_machine(run.device),
        "how": f"build_run(VAEConfig(train_size={BATCH_SIZE * steps}, precision={precision!r})) "
        f"+ Run.fit(epochs=1, validate=False); device {run.device}, {_compiled(run.model)}",
    }
    return lambda: float(run.fit(epochs=1, validate=False, verbose=0).history["elbo"][-1]), info


def _baseline(data, steps):
    """keras.io's VAE example (Keras 3) on the package's encoder and decoder: GradientTape, Adam, NumPy input."""
    import keras
    import tensorflow as tf
    from keras import ops

    from vae_keras.models import build_decoder, build_encoder

    class Sampling(keras.layers.Layer):
        """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            epsilon = keras.random.normal(shape=ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    class VAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder, self.decoder, self.sampling = encoder, decoder, Sampling()
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
            self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                z_mean, z_log_var = ops.split(self.encoder(data), 2, axis=-1)  # 40 outputs: means, log-variances
                reconstruction = ops.sigmoid(self.decoder(self.sampling([z_mean, z_log_var])))
                reconstruction_loss = ops.mean(ops.sum(0.5 * ops.square(reconstruction - data), axis=(1, 2, 3)))
                kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
                kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
                total_loss = reconstruction_loss + kl_loss
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {metric.name: metric.result() for metric in self.metrics}

    x = data[0][0][: BATCH_SIZE * steps]
    model = VAE(build_encoder(20), build_decoder(20))
    model.compile(optimizer=keras.optimizers.Adam())
    how = "keras.io-style VAE on build_encoder(20) + build_decoder(20), fit(x, batch_size=512) on NumPy; "
    info = {"how": how + f"TensorFlow's default placement, {_compiled(model)}"}
    return lambda: float(model.fit(x, batch_size=BATCH_SIZE, epochs=1, verbose=0).history["total_loss"][-1]), info


def _compiled(model):
    """The compile settings Keras resolved for `model`, as text."""
    return f"jit_compile={model.jit_compile}, steps_per_execution={model.steps_per_execution}"


def _parse_args(argv):
    """The command line; --quick sets 2 windows of 2 steps unless they are given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " Prints figures; asserts nothing.")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 windows of 2 steps")
    parser.add_argument("--windows", type=_positive, help="measured windows per implementation (default 6)")
    parser.add_argument("--steps", type=_positive, help=f"batches of {BATCH_SIZE} per window (default 10)")
    parser.add_argument("--no-bfloat16", action="store_true", help="leave out vae_keras in mixed_bfloat16")
    args = parser.parse_args(argv)
    args.windows = args.windows or (2 if args.quick else 6)
    args.steps = args.steps or (2 if args.quick else 10)
    if args.steps > EPOCH_STEPS:
        parser.error(f"--steps must be at most {EPOCH_STEPS} (60,000 images / {BATCH_SIZE}), received {args.steps}")
    return args


def _positive(text):
    """An integer >= 1, for argparse."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, received {text!r}")
    return value


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as error:  # a child failed; every child is ended by now
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
