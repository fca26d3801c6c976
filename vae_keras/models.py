"""The reference encoder and decoder, and the VAE model that trains them together."""

import zipfile
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from vae_keras import losses
from vae_keras.backends import Steps
from vae_keras.checks import check_choice, check_int, check_number
from vae_keras.layers import Sampling
from vae_keras.metrics import ELBO
from vae_keras.config import LIKELIHOODS, MAX_LATENT_DIM, NUM_CLASSES, PRETRAINED_MODEL_PATH

IMAGE_SHAPE = (28, 28, 1)


def build_encoder(latent_dim=20, name="encoder", dtype=None, conditional=False):
    """The reference's encoder: conv 3x3/2 (32), ReLU, conv 3x3/2 (64), ReLU, dense (2 * latent_dim).

    The first `latent_dim` outputs are the code's means, the last its
    log-variances; Glorot-uniform weights and zero biases, as MATLAB's.

    Args:
        latent_dim: size of the latent code (20 in the reference).
        name: name of the returned model.
        dtype: the layers' dtype policy, such as "mixed_bfloat16"; None: Keras' global one.
        conditional: also take the digit, one-hot (batch, 10), joined to the flattened features
            before the dense layer (a conditional VAE's q(z | x, y)).

    Returns:
        A functional `keras.Model`: (batch, 28, 28, 1) images [and (batch, 10) one-hot digits]
        -> (batch, 2 * latent_dim).
    """
    check_int("latent_dim", latent_dim, maximum=MAX_LATENT_DIM, maximum_is="the pixels of an image")
    images = keras.Input(shape=IMAGE_SHAPE, name="input_encoder")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv1", dtype=dtype)(images)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    inputs = images
    if conditional:
        digits = keras.Input(shape=(NUM_CLASSES,), name="digit_encoder")
        x = layers.Concatenate(name="with_digit", dtype=dtype)([x, digits])
        inputs = [images, digits]
    outputs = layers.Dense(2 * latent_dim, name="fc_encoder", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


def build_decoder(latent_dim=20, name="decoder", dtype=None, conditional=False):
    """The reference's decoder: 1x1xlatent_dim, transposed convs 7x7/7 (64), 3x3/2 (64), 3x3/2 (32), 3x3/1 (1).

    ReLU between them; the output is logits (`VAE.decode` applies the sigmoid).

    Args:
        latent_dim: size of the latent code (20 in the reference).
        name: name of the returned model.
        dtype: the layers' dtype policy, such as "mixed_bfloat16"; None: Keras' global one.
        conditional: also take the digit, one-hot (batch, 10), joined to the code (a conditional
            VAE's p(x | z, y)); the first layer then sees 1x1x(latent_dim + 10).

    Returns:
        A functional `keras.Model`: (batch, latent_dim) codes [and (batch, 10) one-hot digits]
        -> (batch, 28, 28, 1) logits.
    """
    check_int("latent_dim", latent_dim, maximum=MAX_LATENT_DIM, maximum_is="the pixels of an image")
    codes = keras.Input(shape=(latent_dim,), name="input_decoder")
    inputs, x, width = codes, codes, latent_dim
    if conditional:
        digits = keras.Input(shape=(NUM_CLASSES,), name="digit_decoder")
        x = layers.Concatenate(name="with_digit", dtype=dtype)([codes, digits])
        inputs, width = [codes, digits], latent_dim + NUM_CLASSES
    x = layers.Reshape((1, 1, width), name="to_1x1", dtype=dtype)(x)
    x = layers.Conv2DTranspose(64, 7, strides=7, padding="same", activation="relu", name="transpose1", dtype=dtype)(x)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu", name="transpose2", dtype=dtype)(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu", name="transpose3", dtype=dtype)(x)
    outputs = layers.Conv2DTranspose(1, 3, strides=1, padding="same", name="transpose4", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="vae_keras")
class VAE(Steps, keras.Model):
    """A variational autoencoder: encoder, `Sampling` layer and decoder, trained on the reference's ELBO loss.

    Its `train_step` and `test_step` come from `vae_keras.backends` (one pair
    per Keras backend); `fit` and `evaluate` report `elbo`,
    `reconstruction_loss` and `kl_loss`, per image, averaged over the images.

    A conditional VAE (`conditional=True`) is also given each image's digit,
    0-9: it trains and evaluates on `(images, labels)` pairs, its `encode` and
    `decode` take the labels, and `generate(n, digit=7)` draws that digit.

    Args:
        encoder: images [and one-hot digits] -> 2 * latent_dim values; None: `build_encoder`.
        decoder: (batch, latent_dim) codes [and one-hot digits] -> logits; None: `build_decoder`.
        latent_dim: used only to build a missing encoder or decoder.
        seed: seed of the sampling layer's generator (None: random).
        precision: dtype policy of the networks built here ("float32", "mixed_bfloat16");
            codes, images, the loss and the metrics are float32 either way.
        likelihood: the decoder's p(x | z): "gaussian" (the reference) or "bernoulli".
        beta: the KL term's weight in the training loss; the reported ELBO keeps weight 1.
        kl_warmup_epochs: the KL weight rises linearly from 0 to `beta` over this many epochs.
        conditional: give the digit to the encoder and the decoder (Sohn, Lee & Yan 2015).
        **kwargs: base `keras.Model` keyword arguments (`name`...).

    Raises:
        ValueError: when the encoder's and decoder's latent sizes disagree, or their inputs
            do not match `conditional`.
    """

    def __init__(
        self, encoder=None, decoder=None, latent_dim=20, seed=None, precision=None, likelihood="gaussian",
        beta=1.0, kl_warmup_epochs=0, conditional=False, **kwargs,
    ):
        kwargs.setdefault("name", "vae")
        super().__init__(**kwargs)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        check_number("beta", beta, inclusive=True)
        check_int("kl_warmup_epochs", kl_warmup_epochs, minimum=0)
        check_choice("conditional", conditional, (True, False))
        self.likelihood = likelihood
        self.beta = float(beta)
        self.kl_warmup_epochs = int(kl_warmup_epochs)
        self.conditional = conditional
        self.encoder = (
            encoder if encoder is not None else build_encoder(latent_dim, dtype=precision, conditional=conditional)
        )
        self.decoder = (
            decoder if decoder is not None else build_decoder(latent_dim, dtype=precision, conditional=conditional)
        )
        wanted_inputs = 2 if conditional else 1
        for part in (self.encoder, self.decoder):
            if len(part.inputs) != wanted_inputs:
                raise ValueError(
                    f"The {part.name} takes {len(part.inputs)} input(s); a VAE with conditional={conditional} "
                    f"needs {wanted_inputs} ({'the images or codes, and the one-hot digits' if conditional else 'the images or codes'})"
                )
        encoder_outputs = self.encoder.outputs[0].shape[-1]
        if encoder_outputs is None or encoder_outputs % 2:
            raise ValueError(
                "The encoder must output an even number of values (means, then "
                f"log-variances), received an output of size {encoder_outputs}"
            )
        self.latent_dim = encoder_outputs // 2
        decoder_inputs = self.decoder.inputs[0].shape[-1]
        if decoder_inputs != self.latent_dim:
            raise ValueError(
                f"The decoder takes codes of size {decoder_inputs} but the encoder "
                f"makes codes of size {self.latent_dim}"
            )
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        # The KL term's weight in the training loss: a variable only where it is not 1, so that the
        # reference's models hold exactly the reference's variables.
        self.kl_weight = None
        if self.beta != 1.0 or self.kl_warmup_epochs:
            self.kl_weight = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(self.kl_weight_at(0)), trainable=False,
                name="kl_weight",
            )
        self.elbo_tracker = ELBO(name="elbo")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The encoder and decoder are functional models, built when created, so
        # the model's weights exist now (and an optimizer restored by
        # `keras.saving.load_model` finds them and loads its state).
        self.built = True

    @property
    def metrics(self):
        # Listed here so that Keras resets them at the start of every epoch.
        return [self.elbo_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def encode(self, x, labels=None, training=False):
        """Encodes images into the means and log-variances of their codes.

        Args:
            x: images, shape (batch, 28, 28, 1), values in [0, 1].
            labels: the images' digits, integers (batch,); needed by a conditional
                model, not used by an unconditional one.
            training: passed to the encoder.

        Returns:
            A pair `(z_mean, z_log_var)`, each of shape (batch, latent_dim).
        """
        inputs = [ops.convert_to_tensor(x), self._one_hot(labels, "encode")] if self.conditional else x
        encoded = ops.cast(self.encoder(inputs, training=training), "float32")
        return encoded[:, : self.latent_dim], encoded[:, self.latent_dim :]

    def decode(self, z, labels=None, training=False):
        """Decodes codes into images: the decoder's logits through a sigmoid.

        Args:
            z: codes, shape (batch, latent_dim).
            labels: the digits to draw, integers (batch,); needed by a conditional
                model, not used by an unconditional one.
            training: passed to the decoder.

        Returns:
            Images of shape (batch, 28, 28, 1), values in [0, 1].
        """
        return ops.sigmoid(self.logits(z, labels, training=training))

    def logits(self, z, labels=None, training=False):
        """The decoder's outputs before the sigmoid, as float32 (batch, 28, 28, 1)."""
        inputs = [ops.convert_to_tensor(z), self._one_hot(labels, "decode")] if self.conditional else z
        return ops.cast(self.decoder(inputs, training=training), "float32")

    def call(self, inputs, training=False):
        """Reconstructs images through the sampling step, as the reference does.

        `inputs` is the images, or `(images, labels)` for a conditional model.
        """
        x, labels = self.split_inputs(inputs)
        z_mean, z_log_var = self.encode(x, labels, training=training)
        z = self.sampling((z_mean, z_log_var))
        return self.decode(z, labels, training=training)

    def join_inputs(self, x, labels=None):
        """What the model is fed for images or codes `x` and their digits: `x`, or `(x, labels)` (int32) for a conditional model.

        The inverse of `split_inputs`; `in_batches(model.decode, model.join_inputs(codes, labels), 1_000)`
        decodes with the digits where the model takes them.

        Raises:
            ValueError: for a conditional model without `labels`.
        """
        if not self.conditional:
            return x
        if labels is None:
            raise ValueError("This VAE is conditional: it needs the digits (labels), integers 0-9, one per row")
        return x, np.asarray(labels).astype("int32")

    def split_inputs(self, inputs):
        """`(images, labels)` from what the model is fed: the images, or `(images, labels)` for a conditional model."""
        if isinstance(inputs, (tuple, list)):
            if len(inputs) != 2:
                raise ValueError(f"Expected images or (images, labels), received {len(inputs)} arrays")
            return inputs[0], inputs[1]
        if self.conditional:
            raise ValueError(
                "This VAE is conditional: feed it (images, labels), the digits 0-9 of the images, "
                "not the images alone"
            )
        return inputs, None

    def generate(self, n=25, seed=None, batch_size=1_000, digit=None):
        """Decodes `n` codes drawn from N(0, I) into new images.

        Args:
            n: number of images.
            seed: int or None; the same seed gives the same images.
            batch_size: codes per decoder call; bounds the memory of the
                decoder's activations, not the result.
            digit: for a conditional model, the digit 0-9 to draw, or an array of
                `n` digits; None: the digits 0, 1, ..., 9, 0, 1, ... in turn.

        Returns:
            A NumPy float32 array of shape (n, 28, 28, 1), values in [0, 1].

        Raises:
            ValueError: if `n` or `batch_size` is not a positive integer, a digit is
                outside 0-9, or a digit is asked of an unconditional model.
        """
        labels = self.prior_labels(n, digit)
        return self.decode_codes(self.prior_codes(n, seed), labels, batch_size)

    def prior_codes(self, n, seed=None):
        """`n` codes drawn from the prior N(0, I) with NumPy, as `generate` decodes them; float32 (n, latent_dim)."""
        check_int("n", n)
        return np.random.default_rng(seed).standard_normal((int(n), self.latent_dim)).astype("float32")

    def prior_labels(self, n, digit=None):
        """The digits `generate(n, digit=digit)` asks for: None for an unconditional model, else int32 (n,).

        Raises:
            ValueError: for a digit outside 0-9, `n` digits of the wrong length, or any
                digit asked of an unconditional model.
        """
        check_int("n", n)
        if not self.conditional:
            if digit is not None:
                raise ValueError(
                    f"digit={digit!r} needs a conditional VAE (VAEConfig(conditional=True), or the shipped "
                    "models/vae_mnist_conditional.keras); this model draws digits it chooses itself"
                )
            return None
        if digit is None:
            return (np.arange(int(n)) % NUM_CLASSES).astype("int32")
        digits = np.asarray(digit)
        if digits.ndim == 0:
            digits = np.full(int(n), digits)
        if digits.shape != (int(n),) or not np.issubdtype(digits.dtype, np.integer):  # booleans are not integers here
            raise ValueError(
                f"digit must be an integer from 0 to 9 or {n} such integers, received digit={digit!r}"
            )
        if digits.min() < 0 or digits.max() >= NUM_CLASSES:
            bad = int(digits[(digits < 0) | (digits >= NUM_CLASSES)][0])
            raise ValueError(f"digit must be from 0 to {NUM_CLASSES - 1} (MNIST's digits), received digit={bad!r}")
        return digits.astype("int32")

    def decode_codes(self, codes, labels=None, batch_size=1_000):
        """`decode` over many codes (and their digits), `batch_size` at a time; NumPy float32 (n, 28, 28, 1)."""
        return in_batches(self.decode, self.join_inputs(codes, labels), batch_size)

    def loss_terms(self, inputs, training=False):
        """Per-image ELBO loss and its terms for a batch, z sampled: `losses.loss_terms`.

        Args:
            inputs: images (batch, 28, 28, 1), or `(images, labels)` for a conditional model.
            training: passed to the encoder and decoder.

        Returns:
            A dict of tensors of shape (batch,): `elbo`, `reconstruction_loss`, `kl_loss`, `loss`.
        """
        x, labels = self.split_inputs(inputs)
        z_mean, z_log_var = self.encode(x, labels, training=training)
        z = self.sampling((z_mean, z_log_var))
        logits = self.logits(z, labels, training=training)
        kl_weight = 1.0 if self.kl_weight is None else self.kl_weight
        return losses.loss_terms(x, ops.sigmoid(logits), z_mean, z_log_var, logits, self.likelihood, kl_weight)

    def loss_and_terms(self, inputs, training=False):
        """The loss a train step minimises (the batch mean of the per-image `loss`) and `loss_terms`."""
        terms = self.loss_terms(inputs, training=training)
        return ops.mean(terms["loss"]), terms

    def kl_weight_at(self, epoch):
        """The KL term's weight in epoch `epoch` (0-based): beta, reached linearly over the warm-up's epochs."""
        if self.kl_warmup_epochs == 0:
            return self.beta
        return self.beta * min(1.0, epoch / self.kl_warmup_epochs)

    def start_epoch(self, epoch):
        """Sets what depends on the epoch alone (the KL weight of the warm-up), so a resumed run repeats an uninterrupted one."""
        if self.kl_weight is not None:
            self.kl_weight.assign(self.kl_weight_at(epoch))

    def update_metrics(self, terms):
        """Adds a batch's per-image terms to the trackers; returns their results."""
        for metric in self.metrics:
            metric.update_state(terms[metric.name])
        return {metric.name: metric.result() for metric in self.metrics}

    def _one_hot(self, labels, method):
        """The digits as float32 one-hot rows (batch, 10), for a conditional model's encoder and decoder."""
        if labels is None:
            raise ValueError(
                f"This VAE is conditional: {method} needs the digits (labels=...), integers 0-9, one per row"
            )
        return ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), NUM_CLASSES, dtype="float32")

    def get_config(self):
        base_config = super().get_config()
        config = {
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "seed": self.seed,
            "likelihood": self.likelihood,
            "beta": self.beta,
            "kl_warmup_epochs": self.kl_warmup_epochs,
        }
        if self.conditional:  # only then, so that the reference's files stay as they were
            config["conditional"] = True
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


def in_batches(function, x, batch_size):
    """Calls `function` on consecutive slices of `x`, `batch_size` rows each, and joins its outputs.

    Bounds the memory of a model's activations when it runs over a whole data
    set: `in_batches(model.decode, codes, 1_000)`. Where `x` is a tuple of
    arrays of one length, each call gets a slice of each:
    `in_batches(model.encode, (images, labels), 1_000)`.

    Returns:
        The outputs concatenated as NumPy arrays; a tuple of arrays where
        `function` returns a tuple.

    Raises:
        ValueError: when `batch_size` is not a positive integer or `x` is empty.
    """
    check_int("batch_size", batch_size)
    parts = x if isinstance(x, tuple) else (x,)
    if len({len(part) for part in parts}) != 1:
        raise ValueError(f"in_batches needs arrays of one length, received lengths {[len(part) for part in parts]}")
    if len(parts[0]) == 0:
        raise ValueError("in_batches needs at least one row, received an empty array")
    outputs = [
        function(*(part[start : start + batch_size] for part in parts)) for start in range(0, len(parts[0]), batch_size)
    ]
    if isinstance(outputs[0], tuple):
        return tuple(np.concatenate([ops.convert_to_numpy(part) for part in parts]) for parts in zip(*outputs))
    return np.concatenate([ops.convert_to_numpy(output) for output in outputs])


def load_keras_file(path, what, hint="", compile=True):
    """`keras.saving.load_model(path, compile)`, with a one-line error naming the file.

    `what` names the content for the messages ("model"); `hint` is added when the file is missing.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not a readable `.keras` archive.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} file at {path}." + (f" {hint}" if hint else ""))
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"Could not load a {what} from {path}: it is not a .keras model archive (a "
            ".keras file is a zip archive written by model.save); it may be truncated "
            "or another kind of file."
        )
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types for a bad archive
        raise ValueError(
            f"Could not load a {what} from {path}: {type(error).__name__}: {error}"
        ) from error


def load_vae(path=None):
    """Loads a saved `VAE` (`.keras` file), by default the pretrained one.

    Args:
        path: a `.keras` file written by `VAE.save`; None loads
            `models/vae_mnist.keras`, the model that ships with the project.

    Returns:
        The `VAE`, compiled as it was saved.

    Raises:
        FileNotFoundError: when the file does not exist (the message names it).
        ValueError: when the file is not a readable `.keras` VAE.
    """
    path = Path(PRETRAINED_MODEL_PATH if path is None else path)
    hint = (
        "The pretrained model ships with the project in models/; train one with "
        "`python -m vae_keras train` or pass --model PATH."
    )
    model = load_keras_file(path, "model", hint if path == PRETRAINED_MODEL_PATH else "")
    if not isinstance(model, VAE):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a vae_keras VAE")
    return model
