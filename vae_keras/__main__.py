"""Command line: `python -m vae_keras train | evaluate | generate | figures | quality | train-classifier`.

Kept short on purpose: the package's modules do the work. Keras' backend: `KERAS_BACKEND=jax python -m vae_keras train`.
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from vae_keras import classifier, plotting, quality, run_folder, training
from vae_keras.backends import BACKEND
from vae_keras.config import AUTO_BOOL, MAX_SEED, MNIST_IMAGE_SHAPE, PRETRAINED_MODEL_PATH, VAEConfig
from vae_keras.data import load_mnist
from vae_keras.images import load_images, read_images
from vae_keras.models import load_vae


def main(argv=None):
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, RuntimeError) as error:  # missing or damaged files, full disks, bad values
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted. Run the same command again to resume.", file=sys.stderr)
        return 130


def _train(args):
    fields = {field.name: getattr(args, field.name) for field in dataclasses.fields(VAEConfig)}
    shape_given = fields["image_shape"] is not None
    fields["image_shape"] = fields["image_shape"] or MNIST_IMAGE_SHAPE
    if fields["images"] is not None:  # a path that stays right from any working folder, for evaluate and figures
        fields["images"] = str(Path(fields["images"]).resolve())
    config = VAEConfig(**fields)  # every flag checked before any image is read
    data = None
    if config.images is not None:
        data = load_images(config.images, size=config.resize, test_fraction=config.test_fraction, seed=config.seed)
        if not shape_given:
            config = dataclasses.replace(config, image_shape=data[0][0].shape[1:])
        print(f"Images: {len(data[0][0])} for training and {len(data[1][0])} held out for testing, "
              f"{'x'.join(map(str, data[0][0].shape[1:]))}, from {config.images}")
    print(f"Configuration: {config}")
    try:
        result = training.train(config, output_dir=args.output_dir, data=data, verbose=args.verbose,
                                overwrite=args.overwrite)
    except training.TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(f"Saved the model to {result.output_dir / run_folder.MODEL_FILE}")
    print(f"Saved the per-epoch history to {result.output_dir / run_folder.HISTORY_FILE}")
    return 0


def _test_images(args, model):
    """`(x, y, what)` of `--images` (y None), else of the run's own held-out images, else of MNIST's test set."""
    if args.images is not None:
        x = read_images(args.images, size=model.image_shape[:2], channels=model.image_shape[2])
        return x, None, f"{args.images} (all {len(x)})"
    config = run_folder.config_beside(args.model)
    if config is not None and config.images is not None:
        _, (x, y) = load_images(config.images, size=config.resize, test_fraction=config.test_fraction, seed=config.seed)
        return x, y, f"the {len(x)} held out of {config.images}"
    if model.image_shape != MNIST_IMAGE_SHAPE:
        raise ValueError(f"{args.model} takes {'x'.join(map(str, model.image_shape))} images, not MNIST's, and no "
                         "config.json beside it names them: give them with --images PATH")
    (_, _), (x, y) = load_mnist(args.data_dir)
    return x, y, "MNIST's test set"


def _evaluate(args):
    model = load_vae(args.model)
    x_test, y_test, what = _test_images(args, model)
    if args.test_size is not None:
        x_test, y_test = x_test[: args.test_size], None if y_test is None else y_test[: args.test_size]
    model.sampling.reseed(args.seed)
    start = time.perf_counter()
    results = training.evaluate(model, x_test, y_test, batch_size=args.batch_size)
    print(f"Model: {args.model or PRETRAINED_MODEL_PATH}")
    print(f"Test images: {len(x_test)} of {what} (z sampled, seed {args.seed})")
    print(f"Test ELBO loss = {results['elbo']:.4f}")
    print(f"Reconstruction loss = {results['reconstruction_loss']:.4f}")
    print(f"KL loss = {results['kl_loss']:.4f}")
    print(f"Time taken = {time.perf_counter() - start:.2f}s")
    return 0


def _generate(args):
    model = load_vae(args.model)
    path, (width, height) = plotting.write_generated(model, args.n, args.out, seed=args.seed, digit=args.digit)
    what = "generated " + ("digits" if model.image_shape == MNIST_IMAGE_SHAPE else "images")
    what = what if args.digit is None else f"generated {args.digit}s"
    print(f"Saved {args.n} {what} to {path} ({plotting.IMAGE_FORMATS[path.suffix.lower()]}, {width} x {height} pixels)")
    return 0


def _figures(args):
    model = load_vae(args.model)
    history = args.history if args.history is not None else run_folder.history_beside(args.model)
    x, y, _ = _test_images(args, model)
    for path in plotting.save_all_figures(model, args.out_dir, history_path=history, seed=args.seed, data=(x, y)):
        print(f"Saved {path}")
    return 0


def _train_classifier(args):
    path = args.out if args.out is not None else classifier.CLASSIFIER_PATH
    result = classifier.train_classifier(path, epochs=args.epochs, seed=args.seed, verbose=args.verbose)
    print(f"Test accuracy = {result['test_accuracy']:.4f} (test loss {result['test_loss']:.4f})")
    print(f"Saved the classifier to {result['path']} ({result['path'].stat().st_size / 1024:.0f} KB)")
    print(f"Saved its history to {result['history_path']} and settings to {result['config_path']}")
    return 0


def _quality(args):
    model = load_vae(args.model)
    if model.image_shape != MNIST_IMAGE_SHAPE:
        raise ValueError(f"The quality report reads digits with an MNIST classifier; {args.model} draws "
                         f"{'x'.join(map(str, model.image_shape))} images. Use evaluate and figures for it")
    digit_classifier = classifier.load_classifier(args.classifier)
    data = load_mnist(args.data_dir)
    start = time.perf_counter()
    report = quality.quality_report(model, digit_classifier, data, n=args.n, seed=args.seed)
    print(f"Model: {args.model or PRETRAINED_MODEL_PATH}")
    print(quality.format_report(report))
    if model.conditional:
        rates = quality.requested_digit_agreement(model, digit_classifier, n=args.n // 10 or 1, seed=args.seed)
        print("Generated digits read as the digit asked for: "
              + ", ".join(f"{digit}: {100 * rate:.1f}%" for digit, rate in enumerate(rates)))
    print(f"Time taken = {time.perf_counter() - start:.1f}s")
    return 0


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m vae_keras",
        description="Train, evaluate and sample the VAE of MathWorks' example, on MNIST or on your own images.",
        epilog=f"Keras backend: {BACKEND}. Choose another with the environment variable KERAS_BACKEND "
        "(tensorflow, jax or torch), e.g. KERAS_BACKEND=jax python -m vae_keras train.")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train with the reference protocol, on MNIST or on --images")
    for field in dataclasses.fields(VAEConfig):  # one flag per field, from its type and its metadata (help, choices)
        kwargs = {"default": field.default, "help": f"{field.metadata['help']} (default: {field.default})"}
        choices = field.metadata["choices"]
        if field.type in (bool, "bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif choices == AUTO_BOOL:
            kwargs["type"] = _auto_bool
        elif choices is not None:
            kwargs["choices"] = choices
        else:
            kwargs["type"] = _FIELD_TYPES[field.type]
        train.add_argument("--" + field.name.replace("_", "-"), **kwargs)
    train.add_argument("--output-dir", default="runs/vae", help="folder of the run (default: %(default)s)")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="0 silent, 1 progress bar and the reference's line, 2 that line alone (default: %(default)s)")
    train.set_defaults(image_shape=None, run=_train)  # image_shape None: MNIST's, or that of --images

    evaluate = commands.add_parser("evaluate", help="print the test ELBO of a model")
    _add_model_flag(evaluate)
    evaluate.add_argument("--test-size", type=_positive_int, default=None, help="first N test images only")
    evaluate.add_argument("--batch-size", type=_positive_int, default=2000, help="images per batch (speed only)")
    evaluate.add_argument("--seed", type=_seed_int, default=0, help="seed of the sampling noise")
    evaluate.add_argument("--data-dir", default=None, help="folder of the MNIST files (default: data/)")
    _add_images_flag(evaluate)
    evaluate.set_defaults(run=_evaluate)

    generate = commands.add_parser("generate", help="decode codes drawn from N(0, I) into one PNG or JPEG tile")
    _add_model_flag(generate)
    generate.add_argument("--n", type=_positive_int, default=25,
                          help="number of images, at most 1,000,000 (default: %(default)s)")
    generate.add_argument("--out", default="generated.png",
                          help="the .png (or no suffix) or .jpg / .jpeg file (default: %(default)s)")
    generate.add_argument("--seed", type=_seed_int, default=None, help="seed of the codes")
    generate.add_argument("--digit", type=_int_at_least(0, "a digit from 0 to 9", maximum=9), default=None,
                          help="the digit to draw, 0-9: needs a conditional model (train --conditional, or "
                          "models/vae_mnist_conditional.keras)")
    generate.set_defaults(run=_generate)

    figures = commands.add_parser("figures", help="write notebook 4's main figures as PNG files")
    _add_model_flag(figures)
    figures.add_argument("--out-dir", default="docs/figures", help="folder for the PNGs (default: %(default)s)")
    figures.add_argument("--history", default=None,
                         help="history.csv for the training curve (default: the one beside the model)")
    figures.add_argument("--seed", type=_seed_int, default=0, help="seed of the random choices")
    figures.add_argument("--data-dir", default=None, help="folder of the MNIST files (default: data/)")
    _add_images_flag(figures)
    figures.set_defaults(run=_figures)

    train_classifier = commands.add_parser("train-classifier", help="train the digit classifier of the quality report")
    train_classifier.add_argument("--out", default=None,
                                  help="the .keras file to write (default: models/digit_classifier.keras)")
    train_classifier.add_argument("--epochs", type=_positive_int, default=3,
                                  help="passes over the training images (default: %(default)s)")
    train_classifier.add_argument("--seed", type=_seed_int, default=0, help="seed of the run (default: %(default)s)")
    train_classifier.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                                  help="Keras' fit verbosity (default: %(default)s)")
    train_classifier.set_defaults(run=_train_classifier)

    quality = commands.add_parser("quality", help="print the sample-quality report of a model")
    _add_model_flag(quality)
    quality.add_argument("--classifier", default=None,
                         help="the digit classifier (default: models/digit_classifier.keras)")
    quality.add_argument("--n", type=_positive_int, default=10_000,
                         help="images per set, at most 10000 (default: %(default)s)")
    quality.add_argument("--seed", type=_seed_int, default=0, help="seed of the codes and of the training images drawn")
    quality.add_argument("--data-dir", default=None, help="folder of the MNIST files (default: data/)")
    quality.set_defaults(run=_quality)
    return parser


def _add_images_flag(parser):
    parser.add_argument("--images", default=None, help="your own images to use, all of them (a folder or an .npy / "
                        ".npz file, resized to the model's size); default: the run's own held-out images where its "
                        "config.json names them, else MNIST's test set")


def _add_model_flag(parser):
    parser.add_argument("--model", default=None,
                        help="a .keras file saved by vae_keras (default: the pretrained models/vae_mnist.keras)")


def _auto_bool(text):
    value = text.strip().lower()
    if value not in ("auto", "true", "1", "yes", "on", "false", "0", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected auto, true or false, received {text!r}")
    return "auto" if value == "auto" else value in ("true", "1", "yes", "on")


def _auto_or_int(text):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, received {text!r}") from None


def _int_at_least(minimum, description, maximum=None):
    """An argparse type: an integer in [minimum, maximum], with a message naming what was received."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {description}, received {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_seed_int = _int_at_least(0, f"a seed from 0 to {MAX_SEED}", maximum=MAX_SEED)
# The argparse type of each kind of `VAEConfig` field without choices (`VAEConfig` checks the values, naming the field)
_FIELD_TYPES = {int: int, int | None: int, int | str: _auto_or_int, float: float, str | None: str, tuple: str,
                tuple | None: str}


if __name__ == "__main__":
    sys.exit(main())
