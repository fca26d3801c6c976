"""A small digit classifier, the yardstick of the sample-quality report."""

import json
from pathlib import Path

import keras
from keras import layers

from vae_keras.backends import BACKEND
from vae_keras.config import CLASSIFIER_PATH, MAX_SEED, MNIST_IMAGE_SHAPE, NUM_CLASSES, check_int
from vae_keras.data import load_mnist
from vae_keras.files import load_keras_file, write_atomically, write_bytes

FEATURES_LAYER = "features"  # the penultimate layer, whose outputs are the features of the Fréchet distance
FEATURES_DIM = 128  # its number of units


def build_classifier(name="digit_classifier"):
    """A small CNN: images (batch, 28, 28, 1) in [0, 1] to 10 class probabilities, via a 128-unit "features" layer."""
    inputs = keras.Input(shape=MNIST_IMAGE_SHAPE, name="image")
    x = inputs
    for index, filters in enumerate((32, 64, 64), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Dense(FEATURES_DIM, activation="relu", name=FEATURES_LAYER)(x)
    x = layers.Dropout(0.25, name="dropout2")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def train_classifier(path=CLASSIFIER_PATH, epochs=3, seed=0, batch_size=128, data=None, verbose=1):
    """Trains and saves the digit classifier; returns a dict of `test_accuracy`, `test_loss`, paths.

    Args:
        path: the `.keras` file to write (key `path`); `history_path` (`<stem>_history.csv`)
            and `config_path` (`<stem>_config.json`) are written beside it.
        seed: seeds Python, NumPy and the backend (weights, dropout, shuffling).
        data: `((x_train, y_train), (x_test, y_test))` as `load_mnist` returns; None: read `data/`.

    Raises a ValueError if `epochs`, `batch_size` or `seed` is out of range, or `path` is not `.keras`.
    """
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"The classifier is saved as a .keras file, received path={str(path)!r}")
    history_path = path.with_name(path.stem + "_history.csv")
    config_path = path.with_name(path.stem + "_config.json")
    (x_train, y_train), (x_test, y_test) = data if data is not None else load_mnist()
    keras.utils.set_random_seed(seed)
    classifier = build_classifier()
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    classifier.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path.parent.mkdir(parents=True, exist_ok=True)
    classifier.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, validation_data=(x_test, y_test),
        callbacks=[keras.callbacks.CSVLogger(str(history_path))], verbose=verbose)
    test_loss, test_accuracy = classifier.evaluate(x_test, y_test, batch_size=1_000, verbose=0)
    # A copy without the optimizer: a third of the size, and all that inference needs.
    inference_copy = build_classifier(name=classifier.name)
    inference_copy.set_weights(classifier.get_weights())
    write_atomically(path, inference_copy.save)
    scores = {"test_accuracy": float(test_accuracy), "test_loss": float(test_loss)}
    config = {"epochs": epochs, "seed": seed, "batch_size": batch_size, "learning_rate": 1e-3,
              "train_images": int(len(x_train)), **scores, "backend": BACKEND, "keras_version": keras.__version__}
    write_bytes(config_path, (json.dumps(config, indent=2) + "\n").encode())
    return {**scores, "path": path, "history_path": history_path, "config_path": config_path}


def load_classifier(path=None):
    """Loads a digit classifier (`.keras` file written by `train_classifier`); None: the one that ships in models/.

    A FileNotFoundError (naming the file) when it does not exist; a ValueError when it is not a readable `.keras`
    model, or not a 10-class classifier with a "features" layer.
    """
    path = Path(CLASSIFIER_PATH if path is None else path)
    hint = ("The classifier ships with the project in models/; train it again with "
            "`python -m vae_keras train-classifier` or pass --classifier PATH.")
    classifier = load_keras_file(path, "classifier", hint if path == CLASSIFIER_PATH else "", compile=False)
    layer_names = [layer.name for layer in getattr(classifier, "layers", [])]
    if FEATURES_LAYER not in layer_names or tuple(classifier.outputs[0].shape[1:]) != (NUM_CLASSES,):
        raise ValueError(f"{path} holds no digit classifier: expected a model with a {FEATURES_LAYER!r} "
                         f"layer and {NUM_CLASSES} outputs, received {type(classifier).__name__} "
                         f"{classifier.name!r} with layers {layer_names}")
    return classifier
