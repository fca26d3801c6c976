"""Interactive explorers for JupyterLab: drag a slider and the decoded digit is redrawn as it moves.

`LatentExplorer` moves through the latent space, `InterpolationExplorer` from one image's code to another's; for a
conditional model both add a digit selector. Where no kernel runs these `ipywidgets` boxes (a notebook on GitHub),
their mime bundle carries, as `image/png` beside the live widget, a static figure of what the sliders would show.
"""

import io

import ipywidgets as widgets
import matplotlib.figure
import numpy as np
from PIL import Image

from vae_keras import analysis, plotting
from vae_keras.config import NUM_CLASSES, check_int, check_number

# Pixels per image pixel of the live digit (28 x 28 -> 224 x 224).
ZOOM = 8


class _Explorer(widgets.VBox):
    """Sliders, the decoded digit as a live image, and a static figure for renderers without a kernel.

    A subclass gives `code()`, the code the sliders point at (float32, (latent_dim,)), and `static_figure()`.
    """

    def __init__(self, model, sliders, title, digit=0):
        self.model = model
        self.sliders = sliders
        self.image = widgets.Image(format="png", width=28 * ZOOM, height=28 * ZOOM)
        controls = list(sliders)
        self.digit_selector = None
        if model.conditional:
            check_int("digit", digit, minimum=0, maximum=NUM_CLASSES - 1, maximum_is="the digits 0-9")
            self.digit_selector = widgets.ToggleButtons(options=list(range(NUM_CLASSES)), value=int(digit),
                                                        description="digit", style={"button_width": "2.2em"})
            controls.append(self.digit_selector)
        for control in controls:
            control.observe(self._redraw, names="value")
        super().__init__([widgets.HTML(f"<b>{title}</b>"), widgets.HBox([widgets.VBox(controls), self.image])])
        self._redraw()

    def digits(self, n):
        """The chosen digit `n` times (int32), for a conditional model's decoder; None for an unconditional one."""
        return None if self.digit_selector is None else np.full(n, self.digit_selector.value, dtype="int32")

    def decoded(self):
        """The decoded digit at the sliders' code: float32 (28, 28), values in [0, 1]."""
        return self.model.decode_codes(self.code()[None], self.digits(1))[0, ..., 0]

    def _redraw(self, change=None):
        buffer = io.BytesIO()
        Image.fromarray(plotting.grey_levels(self.decoded(), ZOOM), mode="L").save(buffer, format="PNG")
        self.image.value = buffer.getvalue()

    def _decoded_rows(self, codes, column_labels, row_labels, title):
        """A figure of `codes` decoded, `len(column_labels)` a row, the rows labelled by `row_labels`."""
        n, rows = len(column_labels), len(codes) // len(column_labels)
        decoded = self.model.decode_codes(codes.astype("float32"), self.digits(len(codes)))
        figure = matplotlib.figure.Figure(figsize=(1.0 * n, 1.0 * rows + 0.6), layout="constrained")
        axis = figure.subplots()
        axis.imshow(plotting.tile_images(decoded, columns=n), **plotting.IMAGE_STYLE)
        axis.set_xticks(14 + 28 * np.arange(n), labels=column_labels)
        axis.set_yticks(14 + 28 * np.arange(len(row_labels)), labels=row_labels)
        axis.set_title(title)
        return figure

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        buffer = io.BytesIO()
        self.static_figure().savefig(buffer, format="png", dpi=plotting.DPI, bbox_inches="tight")
        bundle["image/png"] = buffer.getvalue()
        return bundle


class LatentExplorer(_Explorer):
    """Sliders over a model's latent space, each reaching `span` either way; the decoded digit follows them.

    For a 2-D model the sliders are the two coordinates themselves; otherwise they move along the first
    `directions` (1 to 10) principal directions of the code means of `x` (with its digits `y` for a conditional
    model), in standard deviations, from the mean code. `digit`: a conditional model's first digit. `start`:
    the sliders' first values, within `span`, e.g. a test image's code for a 2-D model (None: all 0; a 2-D
    model decodes the origin to a flat image, as its decoder's first layer then outputs only its biases).
    """

    def __init__(self, model, x=None, directions=2, span=3.0, y=None, digit=0, start=None):
        check_number("span", span)
        if model.latent_dim == 2:
            self.center, self.axes, names = np.zeros(2), np.eye(2), ["z_1", "z_2"]
        else:
            check_int("directions", directions, maximum=min(10, model.latent_dim))
            if x is None:
                raise ValueError(f"A model of latent_dim={model.latent_dim} needs images x: the sliders move along "
                                 "the principal directions of their code means")
            from sklearn.decomposition import PCA
            if model.conditional and y is None:
                raise ValueError("A conditional model encodes x with its digits: pass y, the labels of x")
            z_mean, _ = analysis.encode(model, plotting.check_images(x), y)
            pca = PCA(n_components=directions).fit(z_mean)
            self.center = pca.mean_
            self.axes = pca.components_ * np.sqrt(pca.explained_variance_)[:, None]
            names = [f"PC {i + 1}" for i in range(directions)]
        self.span = float(span)
        start = np.zeros(len(names)) if start is None else np.asarray(start, dtype="float64").reshape(-1)
        if start.shape != (len(names),) or not np.all(np.abs(start) <= span):
            raise ValueError(f"start must be {len(names)} slider values within span={span}, received {start}")
        sliders = [widgets.FloatSlider(value=value, min=-span, max=span, step=span / 50, description=name,
                                       continuous_update=True, readout_format=".2f")
                   for name, value in zip(names, start)]
        title = "The decoder at a code you choose" + ("" if model.latent_dim == 2 else " (in standard deviations)")
        super().__init__(model, sliders, title, digit)

    def code(self):
        values = np.array([slider.value for slider in self.sliders])
        return (self.center + values @ self.axes).astype("float32")

    def static_figure(self, n=9):
        """The decoder along each slider's range (the others where they stand), one row per slider."""
        values = np.linspace(-self.span, self.span, n)
        where = np.array([slider.value for slider in self.sliders])
        rows = np.repeat(where[None, None], len(where), axis=0).repeat(n, axis=1)  # (sliders, n, sliders)
        for i in range(len(where)):
            rows[i, :, i] = values
        codes = self.center + rows.reshape(-1, len(where)) @ self.axes
        others = "at 0" if not where.any() else "where they start"
        drawn_as = "" if self.digit_selector is None else f", drawn as a {self.digit_selector.value}"
        return self._decoded_rows(codes, [f"{value:.1f}" for value in values],
                                  [slider.description for slider in self.sliders],
                                  f"Each slider's range, the others {others}{drawn_as} (run the notebook to drag them)")


class InterpolationExplorer(_Explorer):
    """One slider from the code mean of one image (t = 0) to another's (t = 1); the decoded digit follows it.

    A conditional model needs `digits`, the two images' digits `(start, end)`; its selector starts at the first.
    """

    def __init__(self, model, x_start, x_end, digits=None):
        pair = plotting.check_images(np.stack([np.asarray(x_start), np.asarray(x_end)]))
        if model.conditional and digits is None:
            raise ValueError("A conditional model encodes each image with its digit: pass digits=(start, end)")
        z_mean, _ = analysis.encode(model, pair, None if digits is None else np.asarray(digits, dtype="int32"))
        self.start, self.end = z_mean[0], z_mean[1]
        slider = widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.01, description="t",
                                     continuous_update=True, readout_format=".2f")
        super().__init__(model, [slider], "From one image's code to another's", 0 if digits is None else digits[0])

    def code(self):
        t = self.sliders[0].value
        return ((1 - t) * self.start + t * self.end).astype("float32")

    def static_figure(self, n=11):
        """The decoded codes at t = 0, 0.1, ..., 1."""
        ts = np.linspace(0.0, 1.0, n)
        codes = (1 - ts)[:, None] * self.start + ts[:, None] * self.end
        return self._decoded_rows(codes, [f"{t:.1f}" for t in ts], [],
                                  "t from 0 to 1 (run the notebook to drag the slider)")
