"""What machine a notebook or a run used: CPU model and cores, GPUs, Keras backend and versions."""

import os
import platform

import keras

from vae_keras import backends


def describe_machine(device=None):
    """A few lines naming the machine, so that timings can be read in context.

    The lines: CPU model and cores, the accelerators the backend sees, the training `device` (such as "cpu:0",
    as `vae_keras.select_device` returns; None leaves that line out), the operating system, and the Python,
    Keras and backend versions.
    """
    accelerators = backends.visible_gpus()
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} cores",
             f"Accelerators the backend sees: {', '.join(accelerators) if accelerators else 'none'}"]
    if device is not None:
        lines.append(f"Training device: {device}")
    lines += [f"System: {platform.platform()}",
              f"Python {platform.python_version()}, Keras {keras.__version__}, "
              f"backend {backends.BACKEND} {backends.backend_version()}"]
    return "\n".join(lines)


def cpu_model():
    """The CPU's model name, from /proc/cpuinfo on Linux, else `platform.processor()`; "unknown CPU" when
    neither says."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
