"""The reference's encoder and decoder, and the VAE that trains them: its loss and its `train_step` on each backend.

Read top to bottom: the two networks, then `VAE` (encode, sample, decode, the
loss, the train and test steps of TensorFlow, JAX and PyTorch side by side,
then sampling new images), then `ConditionalVAE`, which adds the digit's label.
The loss's formulas are in `losses.py`, the sampling layer in `layers.py`.
"""

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from vae_keras import losses
from vae_keras.backends import BACKEND
from vae_keras.config import MNIST_IMAGE_SHAPE, NUM_CLASSES, PRETRAINED_MODEL_PATH, check_int
from vae_keras.data import in_batches
from vae_keras.files import load_keras_file
from vae_keras.layers import Sampling
from vae_keras.metrics import ELBO

if BACKEND == "tensorflow":
    import tensorflow as tf
elif BACKEND == "jax":
    import jax
else:
    import torch

# The longest side of the encoder's last map: its stride-2 convolutions halve the image until it is at most this.
SMALLEST_MAP = 7


def network_plan(image_shape=MNIST_IMAGE_SHAPE):
    """The rule that sizes both networks for images of `image_shape` (H, W, C); the reference's for 28x28x1.

    The encoder halves the image with 3x3 stride-2 convolutions until its longer
    side is at most 7 (28 -> 14 -> 7: the reference's two), with 32, 64, 128, 256,
    256... filters. The decoder mirrors it: one transposed convolution takes the
    1x1 code to that small map in one step (the reference's 7x7 stride 7), 3x3
    stride-2 ones double it back, cropped to H x W where halving rounded up,
    and a 3x3 stride-1 one makes the C channels. Returns `(filters, small_map)`:
    the encoder's filters per convolution and the (height, width) of its last map.
    """
    height, width = image_shape[:2]
    filters = []
    while not filters or max(height, width) > SMALLEST_MAP:
        filters.append(min(32 * 2 ** len(filters), 256))
        height, width = -(-height // 2), -(-width // 2)
    return filters, (height, width)


def build_encoder(latent_dim=20, name="encoder", dtype=None, conditional=False, image_shape=MNIST_IMAGE_SHAPE):
    """The reference's encoder: conv 3x3/2 (32), ReLU, conv 3x3/2 (64), ReLU, dense (2 * latent_dim).

    A functional model from (batch, H, W, C) images to (batch, 2 * latent_dim):
    the code's means, then its log-variances; Glorot-uniform weights and zero
    biases, as MATLAB's. `dtype` is the layers' dtype policy ("mixed_bfloat16";
    None: Keras' global one). With `conditional`, a second input, the one-hot
    digit (batch, 10), joins the flattened features: a conditional VAE's q(z | x, y).
    Images of another `image_shape` get the convolutions of `network_plan`.
    """
    images = keras.Input(shape=image_shape, name="input_encoder")
    x = images
    for index, filters in enumerate(network_plan(image_shape)[0], start=1):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"conv{index}", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    inputs = images
    if conditional:
        digits = keras.Input(shape=(NUM_CLASSES,), name="digit_encoder")
        x = layers.Concatenate(name="with_digit", dtype=dtype)([x, digits])
        inputs = [images, digits]
    outputs = layers.Dense(2 * latent_dim, name="fc_encoder", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


def build_decoder(latent_dim=20, name="decoder", dtype=None, conditional=False, image_shape=MNIST_IMAGE_SHAPE):
    """The reference's decoder: 1x1xlatent_dim, transposed convs 7x7/7 (64), 3x3/2 (64), 3x3/2 (32), 3x3/1 (1).

    A functional model from (batch, latent_dim) codes to (batch, H, W, C) logits
    (`VAE.decode` applies the sigmoid), ReLU between the layers. With
    `conditional`, the one-hot digit (batch, 10) joins the code: p(x | z, y).
    Images of another `image_shape` get the transposed convolutions of `network_plan`.
    """
    filters, small_map = network_plan(image_shape)
    codes = keras.Input(shape=(latent_dim,), name="input_decoder")
    inputs, x, width = codes, codes, latent_dim
    if conditional:
        digits = keras.Input(shape=(NUM_CLASSES,), name="digit_decoder")
        x = layers.Concatenate(name="with_digit", dtype=dtype)([codes, digits])
        inputs, width = [codes, digits], latent_dim + NUM_CLASSES
    x = layers.Reshape((1, 1, width), name="to_1x1", dtype=dtype)(x)
    up = dict(padding="same", activation="relu", dtype=dtype)
    x = layers.Conv2DTranspose(filters[-1], small_map, strides=small_map, name="transpose1", **up)(x)
    for index, count in enumerate(reversed(filters), start=2):
        x = layers.Conv2DTranspose(count, 3, strides=2, name=f"transpose{index}", **up)(x)
    extra = (x.shape[1] - image_shape[0], x.shape[2] - image_shape[1])
    if any(extra):  # halving rounded an odd side up: crop back to the image, evenly
        x = layers.Cropping2D(tuple((side // 2, side - side // 2) for side in extra), name="crop", dtype=dtype)(x)
    last = f"transpose{len(filters) + 2}"
    outputs = layers.Conv2DTranspose(image_shape[2], 3, padding="same", name=last, dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="vae_keras")
class VAE(keras.Model):
    """A variational autoencoder: encoder, `Sampling` layer and decoder, trained on the reference's ELBO loss.

    `fit` and `evaluate` report `elbo`, `reconstruction_loss` and `kl_loss`, per
    image, averaged over the images. The values it is given are trusted:
    `VAEConfig` and `vae_keras.train` check settings once, before a model is built.

    Args:
        encoder, decoder: the networks; None builds the reference's for `latent_dim` and `image_shape`.
        seed: seed of the sampling layer's generator (None: random).
        precision: dtype policy of the networks built here ("float32", "mixed_bfloat16");
            codes, images, the loss and the metrics are float32 either way.
        likelihood: the decoder's p(x | z): "gaussian" (the reference) or "bernoulli".
        beta: the KL term's weight in the training loss; the reported ELBO keeps weight 1.
        kl_warmup_epochs: the KL weight rises linearly from 0 to `beta` over this many
            epochs (`vae_keras.train` sets it at each epoch's start).
    """

    conditional = False

    def __init__(
        self, encoder=None, decoder=None, latent_dim=20, seed=None, precision=None, likelihood="gaussian",
        beta=1.0, kl_warmup_epochs=0, image_shape=MNIST_IMAGE_SHAPE, **kwargs,
    ):
        kwargs.setdefault("name", "vae")
        super().__init__(**kwargs)
        build = dict(dtype=precision, conditional=self.conditional, image_shape=tuple(image_shape))
        self.encoder = encoder if encoder is not None else build_encoder(latent_dim, **build)
        self.decoder = decoder if decoder is not None else build_decoder(latent_dim, **build)
        self.latent_dim = self.encoder.outputs[0].shape[-1] // 2
        self.image_shape = tuple(self.encoder.inputs[0].shape[1:])
        if self.decoder.inputs[0].shape[-1] != self.latent_dim or tuple(self.decoder.outputs[0].shape[1:]) != self.image_shape:
            raise ValueError(
                f"The decoder maps codes of size {self.decoder.inputs[0].shape[-1]} to images of shape "
                f"{tuple(self.decoder.outputs[0].shape[1:])}; the encoder makes codes of size {self.latent_dim} "
                f"from images of shape {self.image_shape}"
            )
        self.seed, self.likelihood, self.beta, self.kl_warmup_epochs = seed, likelihood, float(beta), kl_warmup_epochs
        self.sampling = Sampling(seed=seed, name="sampling")
        # The KL term's weight: a variable only where it is not 1, so that the
        # reference's models hold exactly the reference's variables.
        self.kl_weight = None
        if self.beta != 1.0 or kl_warmup_epochs:
            start = 0.0 if kl_warmup_epochs else self.beta
            self.kl_weight = self.add_weight(shape=(), initializer=keras.initializers.Constant(start),
                                             trainable=False, name="kl_weight")
        self.elbo_tracker = ELBO(name="elbo")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The networks are functional models, built when created, so the weights
        # exist now (and `keras.saving.load_model` restores the optimizer into them).
        self.built = True

    @property
    def metrics(self):
        # Listed here so that Keras resets them at the start of every epoch.
        return [self.elbo_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    # The model: encode, sample, decode.

    def encode(self, x, labels=None, training=False):
        """The means and log-variances of the codes of images `x` (batch, H, W, C): a pair of (batch, latent_dim)."""
        encoded = ops.cast(self.encoder(self.with_labels(x, labels), training=training), "float32")
        return encoded[:, : self.latent_dim], encoded[:, self.latent_dim :]

    def logits(self, z, labels=None, training=False):
        """The decoder's outputs before the sigmoid, as float32 (batch, H, W, C)."""
        return ops.cast(self.decoder(self.with_labels(z, labels), training=training), "float32")

    def decode(self, z, labels=None, training=False):
        """Images decoded from codes `z` (batch, latent_dim): the decoder's mean, values in [0, 1]."""
        return ops.sigmoid(self.logits(z, labels, training=training))

    def call(self, inputs, training=False):
        """Reconstructs images through the sampling step, as the reference does."""
        x, labels = self.split_inputs(inputs)
        z = self.sampling(self.encode(x, labels, training=training))
        return self.decode(z, labels, training=training)

    # The loss, written once for every backend.

    def loss_and_terms(self, inputs, training=False):
        """The loss a train step minimises (the batch mean of `loss`) and the per-image terms (`losses.loss_terms`)."""
        x, labels = self.split_inputs(inputs)
        z_mean, z_log_var = self.encode(x, labels, training=training)
        z = self.sampling((z_mean, z_log_var))
        logits = self.logits(z, labels, training=training)
        kl_weight = 1.0 if self.kl_weight is None else self.kl_weight
        terms = losses.loss_terms(x, ops.sigmoid(logits), z_mean, z_log_var, logits, self.likelihood, kl_weight)
        return ops.mean(terms["loss"]), terms

    def update_metrics(self, terms):
        """Adds a batch's per-image terms to the trackers; returns what `fit` logs."""
        for metric in self.metrics:
            metric.update_state(terms[metric.name])
        return {metric.name: metric.result() for metric in self.metrics}

    # The train and test steps: the same loss, differentiated each backend's way
    # (keras.io, "Customizing what happens in fit()"). `fit` calls them once per batch.
    # The package overrides `train_step` rather than `compute_loss` so that `fit`
    # logs the two terms beside their sum, on every backend, batch for batch.

    if BACKEND == "tensorflow":

        def train_step(self, data):
            with tf.GradientTape() as tape:
                loss, terms = self.loss_and_terms(_inputs(data), training=True)
            gradients = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply(gradients, self.trainable_weights)
            return self.update_metrics(terms)

        def test_step(self, data):
            return self.update_metrics(self.loss_and_terms(_inputs(data))[1])

    elif BACKEND == "jax":
        # JAX differentiates pure functions: Keras hands the step every variable's value
        # in `state` and takes the new values back; `keras.StatelessScope` runs the
        # ordinary `loss_and_terms` and `update_metrics` on those values.

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_variables, metrics_variables = state
            grad_fn = jax.value_and_grad(self._stateless_loss, has_aux=True)
            (_, (terms, non_trainable)), gradients = grad_fn(trainable, non_trainable, data, True)
            trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, gradients, trainable)
            logs, metrics_variables = self._stateless_metrics(metrics_variables, terms)
            return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

        def test_step(self, state, data):
            trainable, non_trainable, metrics_variables = state
            _, (terms, non_trainable) = self._stateless_loss(trainable, non_trainable, data, False)
            logs, metrics_variables = self._stateless_metrics(metrics_variables, terms)
            return logs, (trainable, non_trainable, metrics_variables)

        def _stateless_loss(self, trainable, non_trainable, data, training):
            variables = [*self.trainable_variables, *self.non_trainable_variables]
            with keras.StatelessScope(state_mapping=list(zip(variables, [*trainable, *non_trainable]))) as scope:
                loss, terms = self.loss_and_terms(_inputs(data), training=training)
            # The sampling layer's noise generator advanced: its new state is returned, not assigned.
            return loss, (terms, [scope.get_current_value(v) for v in self.non_trainable_variables])

        def _stateless_metrics(self, metrics_variables, terms):
            with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metrics_variables))) as scope:
                logs = self.update_metrics(terms)
            return logs, [scope.get_current_value(v) for v in self.metrics_variables]

    else:  # PyTorch

        def train_step(self, data):
            self.zero_grad()
            loss, terms = self.loss_and_terms(_inputs(data), training=True)
            loss.backward()
            gradients = [variable.value.grad for variable in self.trainable_weights]
            with torch.no_grad():
                self.optimizer.apply(gradients, self.trainable_weights)
            return self.update_metrics(terms)

        def test_step(self, data):
            with torch.no_grad():
                return self.update_metrics(self.loss_and_terms(_inputs(data))[1])

    # New images from the prior.

    def generate(self, n=25, seed=None, batch_size=1_000, digit=None):
        """Decodes `n` codes drawn from N(0, I) (NumPy, `seed`), `batch_size` per decoder call: the decoder's
        means, a NumPy float32 array (n, H, W, C) in [0, 1]."""
        check_int("n", n)
        check_int("batch_size", batch_size)
        return self.decode_codes(self.prior_codes(n, seed), self.prior_labels(n, digit), batch_size)

    def prior_codes(self, n, seed=None):
        """`n` codes drawn from the prior N(0, I) with NumPy, as `generate` decodes them; float32 (n, latent_dim)."""
        return np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype("float32")

    def decode_codes(self, codes, labels=None, batch_size=1_000):
        """`decode` over many codes (and their digits), `batch_size` at a time; NumPy float32 (n, H, W, C)."""
        return in_batches(self.decode, self.join_inputs(codes, labels), batch_size)

    # Where the label goes: nowhere in this VAE; `ConditionalVAE` overrides these four.

    def with_labels(self, x, labels):
        """What the encoder or decoder is fed for images or codes `x`: `x` itself."""
        return x

    def split_inputs(self, inputs):
        """`(images, labels)` from what the model is fed: here `(images, None)`."""
        return inputs, None

    def join_inputs(self, x, labels=None):
        """What the model is fed for images `x` (and their labels): `x`."""
        return x

    def prior_labels(self, n, digit=None):
        """The digits `generate(n, digit=digit)` draws: None, as this VAE draws digits it chooses itself."""
        if digit is None:
            return None
        if self.image_shape != MNIST_IMAGE_SHAPE:
            shape = "x".join(map(str, self.image_shape))
            raise ValueError(f"digit={digit!r}: labels do not apply to this model of {shape} images; a digit can be "
                             "asked of a conditional VAE of MNIST only")
        raise ValueError(f"digit={digit!r} needs a conditional VAE (VAEConfig(conditional=True), or the shipped "
                         "models/vae_mnist_conditional.keras); this model draws digits it chooses itself")

    def get_config(self):
        return {
            **super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder), "seed": self.seed,
            "likelihood": self.likelihood, "beta": self.beta, "kl_warmup_epochs": self.kl_warmup_epochs,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # A conditional model saved by an earlier version is a "VAE" with "conditional": true.
        if config.pop("conditional", False):
            cls = ConditionalVAE
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="vae_keras")
class ConditionalVAE(VAE):
    """A VAE also given each image's digit, 0-9 (Sohn, Lee & Yan 2015): `generate(n, digit=7)` draws sevens.

    The one-hot digit joins the encoder's flattened features and the decoder's
    code; it trains and evaluates on `(images, labels)` pairs, and its `encode`
    and `decode` take the labels. Arguments as `VAE`'s.
    """

    conditional = True

    def with_labels(self, x, labels):
        """`[x, one-hot digits]`: the encoder's and decoder's two inputs."""
        if labels is None:
            raise ValueError("This VAE is conditional: it needs the digits (labels=...), integers 0-9, one per row")
        digits = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), NUM_CLASSES, dtype="float32")
        return [ops.convert_to_tensor(x), digits]

    def split_inputs(self, inputs):
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(
                "This VAE is conditional: feed it (images, labels), the digits 0-9 of the images, not the images alone"
            )
        return inputs[0], inputs[1]

    def join_inputs(self, x, labels=None):
        """`(x, labels)` (int32): what the model is fed for images or codes `x` and their digits."""
        if labels is None:
            raise ValueError("This VAE is conditional: it needs the digits (labels), integers 0-9, one per row")
        return x, np.asarray(labels).astype("int32")

    def prior_labels(self, n, digit=None):
        """The digits `generate(n, digit=digit)` draws, int32 (n,): `digit` (0-9, or n of them), or 0-9 in turn."""
        if digit is None:
            return (np.arange(n) % NUM_CLASSES).astype("int32")
        digits = np.asarray(digit)
        digits = np.full(n, digits) if digits.ndim == 0 else digits
        if digits.shape != (n,) or not np.issubdtype(digits.dtype, np.integer):  # booleans are not integers here
            raise ValueError(f"digit must be an integer from 0 to 9 or {n} such integers, received digit={digit!r}")
        if digits.min() < 0 or digits.max() >= NUM_CLASSES:
            bad = int(digits[(digits < 0) | (digits >= NUM_CLASSES)][0])
            raise ValueError(f"digit must be from 0 to {NUM_CLASSES - 1} (MNIST's digits), received digit={bad!r}")
        return digits.astype("int32")


def _inputs(data):
    """What `fit` and `evaluate` feed the model in a batch: images, or `(images, labels)` for a conditional VAE."""
    return keras.utils.unpack_x_y_sample_weight(data)[0]


def load_vae(path=None):
    """Loads a saved `VAE` or `ConditionalVAE` (`.keras` file); None: the pretrained `models/vae_mnist.keras`.

    Raises FileNotFoundError for a missing file, ValueError for one that is not a readable `.keras` VAE (named).
    """
    path = Path(PRETRAINED_MODEL_PATH if path is None else path)
    hint = "The pretrained model ships with the project in models/; train one with `python -m vae_keras train` or pass --model PATH."
    model = load_keras_file(path, "model", hint if path == PRETRAINED_MODEL_PATH else "")
    if not isinstance(model, VAE):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a vae_keras VAE")
    return model
