"""Training throughput of vae_keras against a plain keras.io-style port, side by side.

Run from the repository root:

    python benchmarks/train_throughput.py            # the full run, a few minutes on 2 cores
    python benchmarks/train_throughput.py --quick    # a smoke test, figures meaningless

It prints figures and asserts nothing. Each implementation lives in its own
child process (spawned, so each has its own TensorFlow runtime, thread pools
and peak memory), builds its model once, and then runs the timing windows the
parent asks for, alternating between them, so that a slow spell of a shared
machine falls on both. See benchmarks/README.md for how to read the output.
"""

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import traceback

import numpy as np

BATCH_SIZE = 512
EPOCH_STEPS = 60_000 // BATCH_SIZE  # 117 full batches per epoch, as the reference
# vae_keras as it trains by default (float32, as the reference), vae_keras with
# VAEConfig(precision="mixed_bfloat16"), and the keras.io-style baseline.
IMPLEMENTATIONS = ("vae_keras", "vae_keras_bf16", "baseline")
PRECISION = {"vae_keras": "float32", "vae_keras_bf16": "mixed_bfloat16"}
NAME_WIDTH = max(len(name) for name in IMPLEMENTATIONS)  # names right-aligned in the output
# How long the parent waits for one answer of a child before giving up.
ANSWER_TIMEOUT_S = 900


def forward_macs_per_image(latent_dim=20):
    """Multiply-adds of one forward pass of the reference network for one image.

    A convolution costs (output pixels) x (kernel area) x (input channels) x
    (output channels); a transposed convolution (input pixels) x (kernel area)
    x (input channels) x (output channels); a dense layer inputs x outputs.
    Element-wise work (ReLU, sampling, loss) is negligible beside these.

    Returns:
        An int, about 6.79 million for latent_dim=20.
    """
    layers = [
        14 * 14 * 3 * 3 * 1 * 32,  # conv 3x3/2, 28x28x1 -> 14x14x32
        7 * 7 * 3 * 3 * 32 * 64,  # conv 3x3/2, 14x14x32 -> 7x7x64
        7 * 7 * 64 * 2 * latent_dim,  # dense 3136 -> 40
        1 * 1 * 7 * 7 * latent_dim * 64,  # transposed conv 7x7/7, 1x1x20 -> 7x7x64
        7 * 7 * 3 * 3 * 64 * 64,  # transposed conv 3x3/2, 7x7x64 -> 14x14x64
        14 * 14 * 3 * 3 * 64 * 32,  # transposed conv 3x3/2, 14x14x64 -> 28x28x32
        28 * 28 * 3 * 3 * 32 * 1,  # transposed conv 3x3/1, 28x28x32 -> 28x28x1
    ]
    return sum(layers)


def train_flops_per_image():
    """FLOPs of one training step per image: forward + backward, about 3x the forward pass."""
    return 3 * 2 * forward_macs_per_image()


# ----------------------------------------------------------------------------
# The parent: machine figures, the matmul peak, the schedule, the report.
# ----------------------------------------------------------------------------


def main(argv=None):
    args = _parse_args(argv)
    print("# Training throughput: vae_keras vs a plain keras.io-style port", flush=True)
    if args.quick:
        print("(--quick: a smoke test; the figures below mean nothing)")
    _print_machine()
    peak_gflops = matmul_peak(args.matmul_size, args.matmul_repeats)

    options = {
        "steps": args.steps,
        "jit_compile": args.jit_compile,
        "steps_per_execution": args.steps_per_execution,
        "intra_op": args.intra_op,
        "inter_op": args.inter_op,
        "determinism": args.determinism,
        "monitor": not args.no_monitor,
        "baseline_input": args.baseline_input,
        "eval_images": args.eval_images,
        "eval_repeats": args.eval_repeats,
        "generate_repeats": args.generate_repeats,
    }
    implementations = [name for name in IMPLEMENTATIONS if not (args.no_bfloat16 and name == "vae_keras_bf16")]
    workers = {}
    try:
        for name in implementations:
            workers[name] = Worker(name, options)
        infos = {name: worker.answer() for name, worker in workers.items()}
        _print_setup(infos, args)

        print("\n## Warm-up (one untimed window each: traces the train step)", flush=True)
        for name, worker in workers.items():
            result = worker.ask("window")
            print(f"{name:>{NAME_WIDTH}}: {result['seconds']:.2f} s for {args.steps} steps (not counted)", flush=True)

        print(f"\n## Measured windows: fit(epochs=1) over {args.steps} batches of {BATCH_SIZE}", flush=True)
        windows = {name: [] for name in implementations}
        for index in range(args.windows):
            for name, worker in workers.items():
                result = worker.ask("window")
                windows[name].append(result)
                print(
                    f"window {index + 1}/{args.windows} {name:>{NAME_WIDTH}}: {result['seconds']:.2f} s, "
                    f"{1000 * result['seconds'] / args.steps:.0f} ms/step, "
                    f"loss {result['loss']:.2f}, load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )

        print("\n## vae_keras: evaluation and generation", flush=True)
        extras = workers["vae_keras"].ask("extras")
        _print_extras(extras)

        rss = {}
        for name, worker in workers.items():
            rss[name] = worker.stop()
    finally:
        for worker in workers.values():
            worker.close()

    _report(windows, infos, rss, peak_gflops, args)


def matmul_peak(size, repeats):
    """Times `a @ b` for two float32 `size` x `size` matrices; prints and returns GFLOP/s."""
    print(f"\n## NumPy float32 matmul peak ({size}x{size}, median of {repeats})", flush=True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: BLAS threads start, pages are touched
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    gflops = 2 * size**3 / median / 1e9
    print(
        f"median {1000 * median:.1f} ms (min {1000 * min(seconds):.1f}, max {1000 * max(seconds):.1f}) "
        f"-> {gflops:.1f} GFLOP/s"
    )
    return gflops


def _print_machine():
    print("\n## Machine")
    print(f"Python {platform.python_version()} on {platform.platform()}")
    print(f"CPU: {_cpu_model()}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"CPU count: os.cpu_count() = {os.cpu_count()}, usable by this process = {affinity}")
    print(f"NumPy {np.__version__}, BLAS: {_blas_name()}")
    print(f"Load average (1, 5, 15 min) at start: {_load_average()}")
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(
            "Note: other processes are using the CPU; absolute figures will be low and noisy. "
            "The ratio, from alternating windows, is the more robust figure."
        )


def _print_setup(infos, args):
    implementations = list(infos)
    info = infos["vae_keras"]
    print("\n## Software and threads (as seen in the child processes)")
    print(f"TensorFlow {info['tensorflow']}, Keras {info['keras']} (backend {info['backend']}), "
          f"NumPy {info['numpy']}")
    for name in implementations:
        info = infos[name]
        print(
            f"{name:>{NAME_WIDTH}}: intra_op_parallelism_threads={info['intra_op']}, "
            f"inter_op_parallelism_threads={info['inter_op']} (0 = TensorFlow's default, "
            f"sized to the cores); device {info['device']}; GPUs seen: {info['gpus'] or 'none'}"
        )
    print("\n## Setup")
    flops = train_flops_per_image()
    print(
        f"Data: the first {BATCH_SIZE * args.steps} MNIST training images (vae_keras.load_mnist), "
        f"batches of {BATCH_SIZE}; {args.windows} windows of {args.steps} steps each, alternating."
    )
    print(
        f"Work per image and training step: about {flops / 1e6:.1f} MFLOP "
        f"(forward {2 * forward_macs_per_image() / 1e6:.1f} MFLOP, backward about twice that)."
    )
    for name in implementations:
        info = infos[name]
        print(
            f"{name:>{NAME_WIDTH}}: encoder {info['encoder_params']:,} + decoder {info['decoder_params']:,} "
            f"trainable parameters; jit_compile={info['jit_compile']}, "
            f"steps_per_execution={info['steps_per_execution']}, "
            f"op determinism {'on' if info['determinism'] else 'off'}; {info['how']}; "
            f"RSS after setup {info['rss_after_setup_kib'] / 1024:.0f} MiB"
        )
        if args.jit_compile == "true" and not info["jit_compile"]:
            reason = (
                "TensorFlow op determinism is on, and Keras' model_supports_jit refuses XLA "
                "under it (try --determinism neither)"
                if info["determinism"]
                else "Keras' model_supports_jit refused it"
            )
            print(f"Note: --jit-compile true was asked for, but {name} runs without XLA: {reason}.")


def _print_extras(extras):
    n = extras["eval_images"]
    print(
        f"evaluate(model, x_test) on {n:,} test images: median {extras['eval_median']:.2f} s "
        f"of {len(extras['eval_seconds'])} ({', '.join(f'{s:.2f}' for s in extras['eval_seconds'])}); "
        f"first call {extras['eval_first']:.2f} s (traces the test step); "
        f"{n / extras['eval_median']:.0f} images/s; test ELBO {extras['elbo']:.2f}"
    )
    print(
        f"model.generate(25, seed=0): median {1000 * extras['generate_median']:.1f} ms "
        f"of {len(extras['generate_seconds'])}; first call {1000 * extras['generate_first']:.1f} ms"
    )


def _report(windows, infos, rss, peak_gflops, args):
    implementations = list(windows)
    print("\n## Results (medians over the measured windows)")
    rows = {}
    for name in implementations:
        step_seconds = [result["seconds"] / args.steps for result in windows[name]]
        median = statistics.median(step_seconds)
        images_per_second = BATCH_SIZE / median
        achieved = train_flops_per_image() * images_per_second / 1e9
        rows[name] = {
            "ms_per_step": 1000 * median,
            "images_per_second": images_per_second,
            "seconds_per_epoch": EPOCH_STEPS * median,
            "peak_rss_mib": rss[name] / 1024,
            "achieved_gflops": achieved,
            "fraction": achieved / peak_gflops,
        }
        print(
            f"{name:>{NAME_WIDTH}}: {1000 * median:.0f} ms/step (min {1000 * min(step_seconds):.0f}, "
            f"max {1000 * max(step_seconds):.0f}), {images_per_second:.0f} images/s, "
            f"{EPOCH_STEPS * median:.1f} s per {EPOCH_STEPS}-step epoch, "
            f"{achieved:.1f} GFLOP/s = {100 * achieved / peak_gflops:.1f}% of the matmul peak, "
            f"peak RSS {rss[name] / 1024:.0f} MiB"
        )
    for name in _variants(implementations):
        pair_ratios = [
            b["seconds"] / a["seconds"] for a, b in zip(windows[name], windows["baseline"])
        ]
        print(
            f"per-window-pair ratios {name} / baseline (images/s): "
            + " ".join(f"{ratio:.2f}" for ratio in pair_ratios)
        )
    print(f"Load average (1, 5, 15 min) at the end: {_load_average()}")

    print("\n## Table (markdown)\n")
    print("| implementation | ms/step | images/s | s/epoch (117 steps) | peak RSS MiB | fraction of matmul peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in implementations:
        row = rows[name]
        print(
            f"| {name} | {row['ms_per_step']:.0f} | {row['images_per_second']:.0f} | "
            f"{row['seconds_per_epoch']:.1f} | {row['peak_rss_mib']:.0f} | "
            f"{100 * row['fraction']:.1f}% |"
        )
    print(
        f"\nMatmul peak {peak_gflops:.1f} GFLOP/s (NumPy float32 {args.matmul_size}^2); "
        f"{train_flops_per_image() / 1e6:.1f} MFLOP per image and step; "
        f"jit_compile={args.jit_compile}, steps_per_execution={args.steps_per_execution}, "
        f"determinism={args.determinism}, monitor={'off' if args.no_monitor else 'on'}, "
        f"baseline input={args.baseline_input}, {args.windows} windows x {args.steps} steps.\n"
    )
    ratios = {
        name: rows[name]["images_per_second"] / rows["baseline"]["images_per_second"]
        for name in _variants(implementations)
    }
    best = {
        name: min(result["seconds"] for result in windows["baseline"])
        / min(result["seconds"] for result in windows[name])
        for name in _variants(implementations)
    }
    print(
        "speed ratio vae_keras / baseline from each one's fastest window (a shared machine "
        "only ever slows a window down): "
        + ", ".join(f"{best[name]:.2f}x {PRECISION[name]}" for name in best)
    )
    print(
        "speed ratio vae_keras / baseline (images per second, medians): "
        + ", ".join(f"{ratios[name]:.2f}x {PRECISION[name]}" for name in ratios),
        flush=True,
    )


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas_name():
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except (AttributeError, KeyError, TypeError):
        return "unknown"


def _variants(implementations):
    """The vae_keras children among `implementations`, each compared with the baseline."""
    return [name for name in implementations if name in PRECISION]


def _load_average():
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


class Worker:
    """One long-lived child process running one implementation, driven through a pipe."""

    def __init__(self, name, options):
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.connection, child_connection = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child_connection, name, options), name=f"bench-{name}", daemon=True
        )
        self.process.start()
        child_connection.close()

    def answer(self, timeout=ANSWER_TIMEOUT_S):
        """The child's next message; raises if it failed, died or took too long."""
        deadline = time.monotonic() + timeout
        while not self.connection.poll(1.0):
            if not self.process.is_alive():
                raise RuntimeError(f"the {self.name} child died (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.name} child did not answer within {timeout} s")
        try:
            kind, payload = self.connection.recv()
        except EOFError as error:
            raise RuntimeError(f"the {self.name} child closed its pipe") from error
        if kind == "error":
            raise RuntimeError(f"the {self.name} child failed:\n{payload}")
        return payload

    def ask(self, command):
        self.connection.send(command)
        return self.answer()

    def stop(self):
        """Asks the child for its peak memory and to exit; returns ru_maxrss in KiB."""
        result = self.ask("stop")
        self.process.join(timeout=30)
        return result["peak_rss_kib"]

    def close(self):
        """Ends the child whatever state it is in (used on errors too)."""
        if self.process.is_alive():
            try:
                self.connection.send("stop")
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


# ----------------------------------------------------------------------------
# The children: one implementation each.
# ----------------------------------------------------------------------------


def _worker_main(connection, name, options):
    try:
        session = _setup(name, options)
        connection.send(("ready", session.info))
        while True:
            try:
                command = connection.recv()
            except EOFError:
                return  # the parent is gone
            if command == "window":
                connection.send(("result", session.window()))
            elif command == "extras":
                connection.send(("result", session.extras()))
            elif command == "stop":
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
                connection.send(("result", {"peak_rss_kib": peak}))
                return
            else:
                raise ValueError(f"unknown command {command!r}")
    except BaseException:
        try:
            connection.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
        sys.exit(1)


def _current_rss_kib():
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _setup(name, options):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Thread pools are fixed when TensorFlow first runs an op: set them first.
    if options["intra_op"] is not None:
        tf.config.threading.set_intra_op_parallelism_threads(options["intra_op"])
    if options["inter_op"] is not None:
        tf.config.threading.set_inter_op_parallelism_threads(options["inter_op"])

    import keras

    import vae_keras

    (x_train, _), (x_test, _) = vae_keras.load_mnist()
    x = x_train[: BATCH_SIZE * options["steps"]]
    if len(x) < BATCH_SIZE * options["steps"]:
        raise ValueError(f"--steps {options['steps']} needs more than the {len(x_train)} training images")
    x_test = x_test[: options["eval_images"]]
    determinism = options["determinism"] == "both" or (
        options["determinism"] == "package" and name in PRECISION
    )
    if name in PRECISION:
        session = VaeKerasSession(x, x_test, dict(options, precision=PRECISION[name]), determinism)
    else:
        session = BaselineSession(x, x_test, options, determinism)
    session.info.update(
        tensorflow=tf.__version__,
        keras=keras.__version__,
        backend=keras.backend.backend(),
        numpy=np.__version__,
        intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
        gpus=[device.name for device in tf.config.list_physical_devices("GPU")],
        determinism=determinism,
        steps_per_execution=session.model.steps_per_execution,
        jit_compile=session.model.jit_compile,
        rss_after_setup_kib=_current_rss_kib(),
    )
    return session


class VaeKerasSession:
    """vae_keras trained the way `vae_keras.training.train` trains it.

    Same model (`build_model`), same input (`EpochBatches`), same
    `fit` arguments, the same per-batch `TrainingMonitor` callback, seeding and
    op determinism. Left out, because they happen once per epoch and not per
    step: the test evaluation (timed separately), `BackupAndRestore`,
    `CSVLogger` and the model save.
    """

    def __init__(self, x, x_test, options, determinism):
        import keras

        from vae_keras import backends, training
        from vae_keras.config import VAEConfig

        jit = {"auto": "auto", "true": True, "false": False}[options["jit_compile"]]
        self.config = VAEConfig(
            jit_compile=jit,
            steps_per_execution=options["steps_per_execution"],
            precision=options["precision"],
        )
        self.device = training.select_device(self.config.execution_environment, verbose=False)
        keras.utils.set_random_seed(self.config.seed)
        if determinism:
            backends.enable_determinism(self.device)
        self.batches = training.EpochBatches(
            x, self.config.batch_size, epochs=1, shuffle=self.config.shuffle, seed=self.config.seed
        )
        monitor = training.TrainingMonitor(self.batches, self.config.seed, model_path=None, verbose=False)
        self.callbacks = [monitor] if options["monitor"] else []
        with keras.device(self.device):
            self.model = training.build_model(self.config, self.device)
        self.x_test = x_test
        self.options = options
        self.info = {
            "device": self.device,
            "encoder_params": _count_params(self.model.encoder),
            "decoder_params": _count_params(self.model.decoder),
            "how": f"precision {self.config.precision}, build_model + EpochBatches(x, 512)"
            + (" + TrainingMonitor" if options["monitor"] else ""),
        }

    def window(self):
        import keras

        with keras.device(self.device):
            start = time.perf_counter()
            history = self.model.fit(
                self.batches, shuffle=False, steps_per_epoch=self.batches.steps, epochs=1,
                callbacks=self.callbacks, verbose=0,
            )
            seconds = time.perf_counter() - start
        return {"seconds": seconds, "loss": float(history.history["elbo"][-1])}

    def extras(self):
        import keras

        from vae_keras import training

        with keras.device(self.device):
            start = time.perf_counter()
            training.evaluate(self.model, self.x_test)
            eval_first = time.perf_counter() - start
            eval_seconds = []
            for _ in range(self.options["eval_repeats"]):
                start = time.perf_counter()
                results = training.evaluate(self.model, self.x_test)
                eval_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            self.model.generate(25, seed=0)
            generate_first = time.perf_counter() - start
            generate_seconds = []
            for _ in range(self.options["generate_repeats"]):
                start = time.perf_counter()
                self.model.generate(25, seed=0)
                generate_seconds.append(time.perf_counter() - start)
        return {
            "eval_images": len(self.x_test),
            "eval_first": eval_first,
            "eval_seconds": eval_seconds,
            "eval_median": statistics.median(eval_seconds),
            "elbo": results["elbo"],
            "generate_first": generate_first,
            "generate_seconds": generate_seconds,
            "generate_median": statistics.median(generate_seconds),
        }


class BaselineSession:
    """The network written as keras.io's examples/generative/vae.py (Keras 3) writes a VAE.

    Its own `Sampling` layer, an encoder that outputs (z_mean, z_log_var, z),
    a decoder ending in a sigmoid, a `VAE(keras.Model)` whose `train_step`
    uses `tf.GradientTape` and three `keras.metrics.Mean` trackers, compiled
    with `keras.optimizers.Adam()` and fitted on NumPy arrays with the default
    shuffling. Only the layers are the reference's (not keras.io's), and the
    loss is the reference's: mean over the batch of
    sum over pixels 0.5 * (x_pred - x)^2 + KL.
    """

    def __init__(self, x, x_test, options, determinism):
        import keras
        import tensorflow as tf

        if determinism:
            tf.config.experimental.enable_op_determinism()
        encoder, decoder = _baseline_networks()
        self.model = _baseline_vae_class()(encoder, decoder)
        compile_kwargs = {}
        if options["jit_compile"] != "auto":
            compile_kwargs["jit_compile"] = options["jit_compile"] == "true"
        if options["steps_per_execution"] != 1:
            compile_kwargs["steps_per_execution"] = options["steps_per_execution"]
        self.model.compile(optimizer=keras.optimizers.Adam(), **compile_kwargs)
        if options["baseline_input"] == "dataset":
            from vae_keras import training

            self.data = training.EpochBatches(x, BATCH_SIZE, epochs=1)
            self.fit_kwargs = {"shuffle": False, "steps_per_epoch": self.data.steps}
            how = "fit on EpochBatches(x, 512)"
        else:
            self.data = x
            self.fit_kwargs = {"batch_size": BATCH_SIZE}
            how = "fit on NumPy arrays, batch_size=512, default shuffle"
        self.info = {
            "device": "TensorFlow's default placement",
            "encoder_params": _count_params(encoder),
            "decoder_params": _count_params(decoder),
            "how": how,
        }
        expected = (144_296, 118_465)
        if (self.info["encoder_params"], self.info["decoder_params"]) != expected:
            raise ValueError(
                f"the baseline has {self.info['encoder_params']:,} + {self.info['decoder_params']:,} "
                f"parameters, the reference {expected[0]:,} + {expected[1]:,}"
            )

    def window(self):
        start = time.perf_counter()
        history = self.model.fit(self.data, epochs=1, verbose=0, **self.fit_kwargs)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "loss": float(history.history["total_loss"][-1])}

    def extras(self):
        raise NotImplementedError("evaluation and generation are timed for vae_keras only")


def _count_params(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def _baseline_networks(latent_dim=20):
    """Encoder and decoder in keras.io's style, with the reference's layers."""
    import keras
    from keras import layers

    sampling_class = _baseline_sampling_class()
    encoder_inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    z = sampling_class()([z_mean, z_log_var])
    encoder = keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")

    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Reshape((1, 1, latent_dim))(latent_inputs)
    x = layers.Conv2DTranspose(64, 7, activation="relu", strides=7, padding="same")(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    decoder = keras.Model(latent_inputs, decoder_outputs, name="decoder")
    return encoder, decoder


def _baseline_sampling_class():
    import keras
    from keras import layers, ops

    class Sampling(layers.Layer):
        """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            batch = ops.shape(z_mean)[0]
            dim = ops.shape(z_mean)[1]
            epsilon = keras.random.normal(shape=(batch, dim), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    return Sampling


def _baseline_vae_class():
    import keras
    import tensorflow as tf
    from keras import ops

    class VAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
            self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                z_mean, z_log_var, z = self.encoder(data)
                reconstruction = self.decoder(z)
                reconstruction_loss = ops.mean(
                    ops.sum(0.5 * ops.square(reconstruction - data), axis=(1, 2, 3))
                )
                kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
                kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
                total_loss = reconstruction_loss + kl_loss
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {
                "total_loss": self.total_loss_tracker.result(),
                "reconstruction_loss": self.reconstruction_loss_tracker.result(),
                "kl_loss": self.kl_loss_tracker.result(),
            }

    return VAE


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Training throughput of vae_keras against a plain keras.io-style VAE, measured in "
            "alternating windows in two child processes. Prints figures; asserts nothing."
        )
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 windows of 2 steps, small matmul, 2,000 test images")
    parser.add_argument("--windows", type=_positive, default=None,
                        help="measured windows per implementation (default 6; 2 with --quick)")
    parser.add_argument("--steps", type=_positive, default=None,
                        help="train steps of 512 images per window (default 10; 2 with --quick)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                        help="XLA for both: auto = each implementation's own default "
                             "(vae_keras: on a GPU only; Keras: on a GPU only), true or false")
    parser.add_argument("--steps-per-execution", type=_positive, default=1,
                        help="train steps per call into the graph, for both (default 1)")
    parser.add_argument("--intra-op", type=_non_negative, default=None,
                        help="tf.config.threading intra-op threads in both children (0 = TF default)")
    parser.add_argument("--inter-op", type=_non_negative, default=None,
                        help="tf.config.threading inter-op threads in both children (0 = TF default)")
    parser.add_argument("--determinism", choices=("package", "both", "neither"), default="package",
                        help="TF op determinism: package = as each is written (vae_keras on, "
                             "baseline off), both, or neither")
    parser.add_argument("--no-bfloat16", action="store_true",
                        help="leave out vae_keras with precision='mixed_bfloat16' (two children, not three)")
    parser.add_argument("--no-monitor", action="store_true",
                        help="leave out vae_keras' per-batch TrainingMonitor callback")
    parser.add_argument("--baseline-input", choices=("numpy", "dataset"), default="numpy",
                        help="feed the baseline NumPy arrays (as keras.io) or vae_keras' "
                             "EpochBatches (isolates the input pipeline)")
    parser.add_argument("--matmul-size", type=_positive, default=None,
                        help="matrix size of the NumPy matmul peak (default 2048; 1024 with --quick)")
    parser.add_argument("--eval-images", type=_positive, default=None,
                        help="test images for the evaluation timing (default 10000; 2000 with --quick)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "windows": 2 if quick else 6,
        "steps": 2 if quick else 10,
        "matmul_size": 1024 if quick else 2048,
        "eval_images": 2_000 if quick else 10_000,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.steps > EPOCH_STEPS:
        parser.error(f"--steps must be at most {EPOCH_STEPS} (60,000 images / {BATCH_SIZE}), received {args.steps}")
    args.matmul_repeats = 3 if quick else 5
    args.eval_repeats = 1 if quick else 3
    args.generate_repeats = 3 if quick else 10
    if args.steps % args.steps_per_execution:
        print(
            f"Note: --steps {args.steps} is not a multiple of --steps-per-execution "
            f"{args.steps_per_execution}; the last call of each window runs fewer steps."
        )
    return args


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, received {text!r}")
    return value


def _non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, received {text!r}")
    return value


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, TimeoutError) as error:  # a child failed; both are ended by now
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("Interrupted; the child processes are ended.", file=sys.stderr)
        sys.exit(130)
