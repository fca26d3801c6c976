"""The checks of values that enter the package, one function per kind, one message style.

Each raises a `ValueError` that names the argument and repeats the value
received: "batch_size must be a positive integer, received batch_size=0".
"""

import math

import numpy as np

# Seeds feed NumPy's and Keras' generators, which take 32-bit unsigned integers.
MAX_SEED = 2**32 - 1


def check_int(name, value, minimum=1, maximum=None, maximum_is=None):
    """Returns `value` if it is an integer in [minimum, maximum] (booleans are not); raises otherwise.

    `maximum_is` says what the maximum is, for the message.
    """
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        if maximum is not None:
            wanted = f"an integer from {minimum} to {maximum}" + (f" ({maximum_is})" if maximum_is else "")
        else:
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        _fail(name, value, wanted)
    return value


def check_number(name, value, minimum=0.0, inclusive=False):
    """Returns `value` if it is a finite real number above `minimum` (or equal, if `inclusive`); raises otherwise."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or not (value >= minimum if inclusive else value > minimum)):
        _fail(name, value, f"a finite number {'>=' if inclusive else '>'} {minimum:g}")
    return value


def check_choice(name, value, choices):
    """Returns `value` if it is one of `choices` (compared with ==, types included); raises otherwise."""
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        _fail(name, value, f"one of {', '.join(map(repr, choices))}")
    return value


def _fail(name, value, wanted):
    raise ValueError(f"{name} must be {wanted}, received {name}={value!r}")
