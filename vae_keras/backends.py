"""Everything that differs between Keras' backends, side by side: train steps, devices, determinism.

Keras 3 runs the same model on TensorFlow, JAX and PyTorch, but a custom
`train_step` has to compute gradients the backend's own way (keras.io's guides
"Customizing what happens in fit()" for TensorFlow, JAX and PyTorch). The three
classes below hold the only code that does; the loss itself is written once,
in `keras.ops`, in `vae_keras.losses`, and `VAE` inherits the steps of the
backend Keras runs on (`Steps`).
"""

import sys

import keras

from vae_keras.startup import BACKENDS, quiet_stderr

# The backend Keras was started with: KERAS_BACKEND, else ~/.keras/keras.json,
# else TensorFlow. It cannot change once Keras is imported.
BACKEND = keras.backend.backend()
if BACKEND not in BACKENDS:
    raise ImportError(
        f"vae_keras trains on Keras' {', '.join(BACKENDS)} backends; Keras runs on "
        f"{BACKEND!r} (KERAS_BACKEND or ~/.keras/keras.json). Set KERAS_BACKEND to one of those."
    )

# Only the active backend's library is imported: TensorFlow need not be
# installed to train on JAX or PyTorch.
if BACKEND == "tensorflow":
    import tensorflow as tf
elif BACKEND == "jax":
    import jax
elif BACKEND == "torch":
    import torch


class TensorFlowSteps:
    """Train and test steps for the TensorFlow backend: `tf.GradientTape`."""

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, terms = self.loss_and_terms(x, training=True)
        gradients = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self.update_metrics(terms)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        _, terms = self.loss_and_terms(x, training=False)
        return self.update_metrics(terms)


class JAXSteps:
    """Train and test steps for the JAX backend: pure functions of the model's state.

    JAX differentiates functions, not objects, so Keras hands the step every
    variable's value in `state` and takes the new values back; nothing is
    assigned in place. `keras.StatelessScope` lets the ordinary, stateful
    `loss_and_terms` and `update_metrics` run on those values.
    """

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        gradient_fn = jax.value_and_grad(self.stateless_loss_and_terms, has_aux=True)
        (_, (terms, non_trainable)), gradients = gradient_fn(trainable, non_trainable, x, training=True)
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, gradients, trainable
        )
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_variables = state
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        _, (terms, non_trainable) = self.stateless_loss_and_terms(trainable, non_trainable, x)
        logs, metrics_variables = self.stateless_update_metrics(metrics_variables, terms)
        return logs, (trainable, non_trainable, metrics_variables)

    def stateless_loss_and_terms(self, trainable, non_trainable, x, training=False):
        """`loss_and_terms` as a pure function of the variables' values (for `jax.value_and_grad`)."""
        variables = [*self.trainable_variables, *self.non_trainable_variables]
        with keras.StatelessScope(state_mapping=list(zip(variables, [*trainable, *non_trainable]))) as scope:
            loss, terms = self.loss_and_terms(x, training=training)
        # The sampling layer's noise generator advanced: its new state is returned, not assigned.
        non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        return loss, (terms, non_trainable)

    def stateless_update_metrics(self, metrics_variables, terms):
        """`update_metrics` on the metrics' values; returns the logs and the new values."""
        with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metrics_variables))) as scope:
            logs = self.update_metrics(terms)
        return logs, [scope.get_current_value(v) for v in self.metrics_variables]


class TorchSteps:
    """Train and test steps for the PyTorch backend: autograd's `backward`."""

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.zero_grad()
        loss, terms = self.loss_and_terms(x, training=True)
        loss.backward()
        gradients = [variable.value.grad for variable in self.trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, self.trainable_weights)
        return self.update_metrics(terms)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with torch.no_grad():
            _, terms = self.loss_and_terms(x, training=False)
        return self.update_metrics(terms)


# The steps `VAE` inherits: those of the backend Keras runs on.
Steps = {"tensorflow": TensorFlowSteps, "jax": JAXSteps, "torch": TorchSteps}[BACKEND]


def visible_gpus():
    """The GPUs the active backend can use, as a list of device names."""
    if BACKEND == "tensorflow":
        with quiet_stderr():  # TensorFlow logs its CUDA probing where there is no GPU
            return [device.name for device in tf.config.list_physical_devices("GPU")]
    if BACKEND == "jax":
        return [str(device) for device in jax.devices() if device.platform == "gpu"]
    return [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]


def devices_of_kind(kind):
    """How many devices of `kind` ("gpu" or "cpu") the backend sees (JAX may see several CPUs)."""
    if kind == "gpu":
        return len(visible_gpus())
    if BACKEND == "jax":
        return len(jax.devices("cpu"))
    return 1


def device_scope(device):
    """`keras.device(device)`, except PyTorch's CPU, which is named without an index.

    On PyTorch, Keras moves each new weight with `.to("cpu:0")`, which copies a
    weight made on "cpu" into a tensor that is no longer a trainable parameter.
    """
    if BACKEND == "torch" and device.startswith("cpu"):
        device = "cpu"
    return keras.device(device)


def set_random_seed(seed):
    """`keras.utils.set_random_seed` (Python, NumPy, Keras, the backend) without TensorFlow on JAX or PyTorch.

    Keras also seeds TensorFlow wherever it is installed, for `tf.data`; this
    project does not use `tf.data` off TensorFlow, so there it is kept out.
    """
    if BACKEND == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    sys.modules["tensorflow"] = None  # `import tensorflow` now fails: Keras skips it
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del sys.modules["tensorflow"]


def enable_determinism(device):
    """Makes training repeatable on the CPU: same seed, same losses.

    TensorFlow needs its deterministic kernels switched on; JAX's CPU kernels
    are deterministic already; PyTorch is asked for deterministic algorithms on
    the CPU (on a GPU they would cost speed and need cuBLAS settings).
    """
    if BACKEND == "tensorflow":
        tf.config.experimental.enable_op_determinism()
    elif BACKEND == "torch":
        # A process-wide switch: off again for a GPU run in the same process.
        torch.use_deterministic_algorithms(device.startswith("cpu"))


def gpu_install_hint():
    """How to get a GPU build of the active backend, for error messages."""
    return {
        "tensorflow": "pip install 'tensorflow[and-cuda]'",
        "jax": "pip install 'jax[cuda12]'",
        "torch": "pip install torch (the default Linux wheel is a CUDA build)",
    }[BACKEND]

