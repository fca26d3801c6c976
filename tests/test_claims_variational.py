"""The claims of the section "What 'variational' buys": a plain autoencoder beside the VAE.

The section is in notebook 5. These tests run its own `Autoencoder` class (its
cell's source) on a few images, and read the numbers its full run stored in its
outputs.
"""

import inspect
import re
from pathlib import Path

import keras
import nbformat
import numpy as np
import pytest
from keras import ops

import vae_keras
from vae_keras import training

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CANDIDATES = [NOTEBOOK_DIR / "05_beyond_the_reference.ipynb"]
CLASS_CELL = "class Autoencoder(vae_keras.VAE):"
# The reference's trainable parameters (SPEC): encoder 144,296, decoder 118,465.
REFERENCE_PARAMETERS = 144_296 + 118_465


def section_notebook():
    """The first notebook holding the section's `Autoencoder` cell."""
    for path in CANDIDATES:
        if path.exists():
            notebook = nbformat.read(path, as_version=4)
            if any(cell.source.startswith(CLASS_CELL) for cell in notebook.cells):
                return path, notebook
    raise AssertionError(f"no notebook holds a cell starting with {CLASS_CELL!r}: {CANDIDATES}")


PATH, NOTEBOOK = section_notebook()


def cell_starting(text):
    """The one code cell whose source starts with `text` (after blank lines)."""
    cells = [cell for cell in NOTEBOOK.cells if cell.cell_type == "code" and cell.source.lstrip().startswith(text)]
    assert len(cells) == 1, f"{PATH.name}: {len(cells)} code cells start with {text!r}"
    return cells[0]


def cell_containing(text):
    """The one code cell whose source holds `text`."""
    cells = [cell for cell in NOTEBOOK.cells if cell.cell_type == "code" and text in cell.source]
    assert len(cells) == 1, f"{PATH.name}: {len(cells)} code cells hold {text!r}"
    return cells[0]


def autoencoder_class():
    """The section's `Autoencoder`, defined by running its cell's source."""
    namespace = {"vae_keras": vae_keras, "keras": keras, "ops": ops, "np": np}
    exec(cell_starting(CLASS_CELL).source, namespace)
    return namespace["Autoencoder"]


Autoencoder = autoencoder_class()


def stored_text(cell):
    """All the stream text and Markdown a cell's stored outputs hold."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output and "text/markdown" in output.data:
            parts.append(output.data["text/markdown"])
    return "\n".join(parts)


def markdown_rows(text):
    """The rows `| name | a | b |` of Markdown tables as {name: [a, b]}, header and separator rows left out."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def images(n=64, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype("float32")


# The autoencoder, built the section's way.


def test_the_autoencoder_has_the_vaes_networks_and_parameter_count():
    autoencoder, vae = Autoencoder(seed=0), vae_keras.VAE(seed=0)
    assert autoencoder.count_params() == vae.count_params() == REFERENCE_PARAMETERS
    for ours, theirs in ((autoencoder.encoder, vae.encoder), (autoencoder.decoder, vae.decoder)):
        assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]


def test_build_run_gives_it_the_vaes_weights_and_batches_and_fit_trains_it():
    # The section builds its autoencoder with training.build_run(model_class=Autoencoder): vae_keras.train's
    # seeds, batches and optimizer, so both models start from the same weights and see the same batches.
    config = vae_keras.VAEConfig(epochs=2, batch_size=64, train_size=256, test_size=64, shuffle=True)
    x = images(300)
    data = ((x, None), (x[:64], None))
    assert "model_class=Autoencoder" in cell_containing("build_run(").source
    vae_run = training.build_run(config, data=data, verbose=0)
    run = training.build_run(config, data=data, verbose=0, model_class=Autoencoder)
    assert type(run.model) is Autoencoder and type(vae_run.model) is vae_keras.VAE
    for ours, theirs in zip(run.model.weights, vae_run.model.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs))
    assert len(run.batches) == len(vae_run.batches) == 8
    for index in range(len(run.batches)):
        np.testing.assert_array_equal(run.batches[index][0], vae_run.batches[index][0])
    assert not np.array_equal(run.batches[0][0], run.batches[4][0])  # epoch 2 is reshuffled
    before = [ops.convert_to_numpy(w).copy() for w in run.model.trainable_weights]
    history = run.fit(validate=False, verbose=0).history
    assert len(history["reconstruction_loss"]) == 2 and "kl_loss" not in history
    assert history["reconstruction_loss"][1] < history["reconstruction_loss"][0]
    assert not np.array_equal(ops.convert_to_numpy(run.model.trainable_weights[0]), before[0])


def test_its_loss_is_the_reconstruction_term_alone_with_no_kl_term():
    autoencoder, x = Autoencoder(seed=0), images()
    loss, terms = autoencoder.loss_and_terms(x)
    assert set(terms) == {"reconstruction_loss"}
    z_mean = autoencoder.encoder(x)[:, : autoencoder.latent_dim]
    expected = vae_keras.reconstruction_loss(x, autoencoder.decode(z_mean))
    np.testing.assert_allclose(float(loss), float(ops.mean(expected)), rtol=1e-6)
    # The log-variance half of the encoder changes nothing: it is in no term of the loss.
    dense = autoencoder.encoder.get_layer("fc_encoder")
    kernel, bias = (ops.convert_to_numpy(w) for w in dense.weights)
    kernel[:, autoencoder.latent_dim :] = np.random.default_rng(1).normal(size=kernel[:, 20:].shape)
    dense.set_weights([kernel, bias + 5.0 * (np.arange(len(bias)) >= autoencoder.latent_dim)])
    np.testing.assert_allclose(float(autoencoder.loss_and_terms(x)[0]), float(loss), rtol=1e-6)


def test_the_vaes_loss_differs_so_the_test_above_can_fail():
    vae, x = vae_keras.VAE(seed=0), images()
    loss, terms = vae.loss_and_terms(x)
    assert float(ops.mean(terms["kl_loss"])) > 0
    assert float(loss) > float(ops.mean(terms["reconstruction_loss"]))


def test_encode_gives_the_mean_and_sampling_keeps_it():
    autoencoder, x = Autoencoder(seed=0), images(16)
    z_mean, z_log_var = autoencoder.encode(x)
    np.testing.assert_array_equal(ops.convert_to_numpy(z_log_var), -30.0)
    sampled = ops.convert_to_numpy(autoencoder(x))  # VAE.call: through the sampling layer
    np.testing.assert_allclose(sampled, ops.convert_to_numpy(autoencoder.decode(z_mean)), atol=1e-5)


def test_fit_reports_the_reconstruction_term_and_leaves_the_log_variance_half_alone():
    autoencoder = Autoencoder(seed=0)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3))
    dense = autoencoder.encoder.get_layer("fc_encoder")
    before = [ops.convert_to_numpy(w).copy() for w in dense.weights]
    history = autoencoder.fit(images(64), batch_size=32, epochs=1, verbose=0).history
    assert set(history) == {"reconstruction_loss"}
    after = [ops.convert_to_numpy(w) for w in dense.weights]
    half = autoencoder.latent_dim
    np.testing.assert_array_equal(after[0][:, half:], before[0][:, half:])
    np.testing.assert_array_equal(after[1][half:], before[1][half:])
    assert not np.array_equal(after[0][:, :half], before[0][:, :half])  # the mean half did train


# The numbers the full run stored.


def test_the_stored_run_is_full_length_and_the_two_models_have_the_same_parameters():
    text = stored_text(cell_containing("build_run("))
    match = re.search(r"(\d+) epochs each: .*; ([\d,]+) and ([\d,]+) parameters", text)
    assert match, f"{PATH.name}: no training line in the stored output: {text!r}"
    assert int(match[1]) == 10
    assert match[2] == match[3] == f"{REFERENCE_PARAMETERS:,}"


def test_the_circle_holds_86_percent_of_the_prior():
    # A 2-D projection of N(0, I) on orthonormal axes (PCA's) is N(0, I_2): P(|z| < 2) = 1 - exp(-2).
    assert "plot_codes_against_prior(" in cell_containing("plot_codes_against_prior").source
    source = inspect.getsource(vae_keras.plotting.plot_codes_against_prior)
    assert "PCA(n_components=2)" in source and ", 2, fill=False" in source
    assert round(100 * (1 - np.exp(-2))) == 86
    draws = np.random.default_rng(0).standard_normal((100_000, 20))
    axes = np.linalg.qr(np.random.default_rng(1).normal(size=(20, 2)))[0]
    assert abs(np.mean(np.linalg.norm(draws @ axes, axis=1) < 2) - 0.865) < 0.01


def test_the_autoencoder_reconstructs_better():
    text = stored_text(cell_containing("test reconstruction term"))
    terms = dict(re.findall(r"(\w+): test reconstruction term ([\d.]+)", text))
    assert float(terms["autoencoder"]) < float(terms["VAE"]) / 2, terms


def spread():
    """The stored table of the codes' spread: {row: (std low, std high, length, distance)}."""
    rows = markdown_rows(stored_text(cell_containing("plot_codes_against_prior")))
    numbers = {}
    for name, cells in rows.items():
        if name == "codes":
            continue
        numbers[name] = tuple(float(value) for value in (*cells[0].split(" to "), cells[1], cells[2]))
    assert set(numbers) == {"VAE", "autoencoder", "VAE, with the sampling noise", "N(0, I) itself"}, numbers
    return numbers


def test_the_autoencoders_codes_are_far_from_the_prior_and_the_vaes_with_noise_match_it():
    codes = spread()
    autoencoder, noisy, means, prior = (
        codes[name] for name in ("autoencoder", "VAE, with the sampling noise", "VAE", "N(0, I) itself")
    )
    assert autoencoder[0] > 1.5  # "every dimension's standard deviation is above 1"
    assert autoencoder[2] > 3 * prior[2]  # "several times as long as draws of N(0, I)"
    assert 100 <= autoencoder[3] < 1000  # "their Fréchet distance to N(0, I) is in the hundreds"
    assert means[1] < 1.0  # "the VAE's code means are narrower than the prior"
    assert noisy[3] < 0.2 and 0.9 < noisy[0] and noisy[1] < 1.1  # "with the sampling noise its codes match it"
    assert prior[3] < 0.05


def quality_rows():
    rows = markdown_rows(stored_text(cell_containing("quality_report(ae_models")))
    columns = rows.pop("set")
    return {name: dict(zip(columns, cells)) for name, cells in rows.items()}


def test_the_quality_report_autoencoder_reconstructs_better_and_generates_worse():
    rows = quality_rows()
    vae_rec, ae_rec = rows["VAE: reconstructions"], rows["autoencoder: reconstructions"]
    vae_gen, ae_gen = rows["VAE: generated"], rows["autoencoder: generated"]
    floor = float(rows["training images"]["Fréchet distance"])
    # "a lower Fréchet distance, near the training images' floor, and more read as their true label"
    assert float(ae_rec["Fréchet distance"]) - floor < 0.1 * float(vae_rec["Fréchet distance"])
    assert float(ae_rec["true label"].rstrip("%")) > float(vae_rec["true label"].rstrip("%"))
    # "a Fréchet distance several times the VAE's"
    assert float(ae_gen["Fréchet distance"]) > 3 * float(vae_gen["Fréchet distance"])
    # "a classifier unsure of most of them": the mean top probability under 0.5, the VAE's above.
    assert float(ae_gen["mean top prob."]) < 0.5 < float(vae_gen["mean top prob."])
    # "some digits far more common than others": the commonest at least 5 times the rarest.
    assert float(ae_gen["class entropy"]) < float(vae_gen["class entropy"])
    rarest, commonest = (float(ae_gen[name].split(": ")[1].rstrip("%"))
                         for name in ("rarest digit", "commonest digit"))
    assert commonest > 5 * rarest


def section_text():
    """The section's Markdown and its code cells' stored output text, from its header to the next section's."""
    markdown, outputs, inside = [], [], False
    for cell in NOTEBOOK.cells:
        lines = cell.source.splitlines()
        if cell.cell_type == "markdown":
            for line in lines:
                if line.startswith(("## ", "### ")):  # a section or a subsection of section 2, not its ####
                    if inside:
                        return "\n".join(markdown), "\n".join(outputs)
                    inside = line.startswith('### What "variational" buys')
                if inside:
                    markdown.append(line)
        elif inside:
            outputs.append(stored_text(cell))
    assert markdown, f"{PATH.name}: no subsection headed 'What \"variational\" buys'"
    return "\n".join(markdown), "\n".join(outputs)


def test_the_text_quotes_no_number_of_the_run_only_what_holds_for_any_run():
    # Notebook 5's introduction: "the cells print their numbers, and the text says of them what holds for any
    # run". The autoencoder is trained afresh by each run, so its section's prose quotes none of its numbers.
    markdown, outputs = section_text()
    assert re.search(r"\d+\.\d+", outputs)  # the outputs hold the run's numbers
    quoted = re.findall(r"\d+\.\d+|\d+(?:\.\d+)?%", markdown.replace("−", "-"))
    assert quoted == ["86%"], quoted  # only the prior's circle (test_the_circle_holds_86_percent_of_the_prior)
