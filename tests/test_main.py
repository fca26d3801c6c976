"""Tests for the command line, `python -m vae_keras`: each command, and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import vae_keras
from vae_keras import VAEConfig
from vae_keras.__main__ import _parser, main


def test_cli_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--epochs", "1", "--train-size", "256", "--test-size", "128", "--batch-size", "128",
            "--output-dir", str(out), "--verbose", "2"]
    assert main(args) == 0
    assert "Epoch : 1 Test ELBO loss" in capsys.readouterr().out
    assert (out / "vae.keras").exists() and (out / "history.csv").exists()
    assert main(args) == 0  # the same command again: the finished run, not trained again
    assert "holds this finished run (1 epochs): loaded, not trained again" in capsys.readouterr().out
    assert main(["evaluate", "--model", str(out / "vae.keras"), "--test-size", "200"]) == 0
    output = capsys.readouterr().out
    assert "Test ELBO loss = " in output and "KL loss = " in output


def test_cli_errors_are_one_line_naming_the_file_or_value(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a keras archive" * 10)
    for args, expected in [
        (["evaluate", "--model", str(tmp_path / "none.keras")], "none.keras"),
        (["generate", "--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "x.png")], "none.keras"),
        (["generate", "--model", str(corrupt), "--out", str(tmp_path / "x.png")], f"Could not load a model from {corrupt}"),
        (["train", "--latent-dim", "0", "--output-dir", str(tmp_path / "x")], "latent_dim=0"),
        (["train", "--latent-dim", "100000000", "--output-dir", str(tmp_path / "x")],
         "latent_dim must be an integer from 1 to 784 (the 784 values of a 28x28x1 image), received latent_dim=100000000"),
        (["train", "--execution-environment", "gpu", "--output-dir", str(tmp_path / "y")], "no GPU"),
    ]:
        assert main(args) == 2, args
        error = capsys.readouterr().err
        assert error.startswith("error: ") and error.count("\n") == 1 and expected in error, (args, error)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x").exists()


def test_cli_precision_flag_reaches_the_config():
    args = _parser().parse_args(["train", "--precision", "mixed_bfloat16", "--epochs", "3"])
    assert (args.precision, args.epochs) == ("mixed_bfloat16", 3)
    assert _parser().parse_args(["train"]).precision == "float32"
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--precision", "float16"])


def test_cli_rejects_values_out_of_range_and_bad_run_files(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--seed", "4294967296"])
    assert "a seed from 0 to 4294967295" in capsys.readouterr().err
    with pytest.raises(ValueError, match="adam_epsilon=inf"):
        VAEConfig(adam_epsilon=float("inf"))
    for name, text in (("list", "[1, 2]"), ("broken", "{not json")):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.json").write_text(text)
        assert main(["train", "--epochs", "1", "--output-dir", str(run_dir)]) == 2
        error = capsys.readouterr().err
        assert str(run_dir / "config.json") in error and "Traceback" not in error


def test_cli_generate_reports_the_file_it_wrote_and_an_unwritable_folder(tmp_path, capsys):
    assert main(["generate", "--n", "4", "--out", str(tmp_path / "digits")]) == 0
    assert (tmp_path / "digits.png").is_file()
    assert f"to {tmp_path / 'digits.png'} (PNG, 560 x 560 pixels)" in capsys.readouterr().out
    # A folder that cannot be written (here: a file stands where the folder
    # should be, which fails even for root) is a one-line error naming it.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    assert main(["generate", "--n", "4", "--out", str(blocker / "digits.png")]) == 2
    error = capsys.readouterr().err
    assert str(blocker) in error and "Traceback" not in error


def test_cli_generate_writes_the_digits_of_generate_one_pixel_each(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "seven.png"
    assert main(["generate", "--n", "7", "--seed", "3", "--out", str(out)]) == 0
    assert "Saved 7 generated digits" in capsys.readouterr().out
    expected = vae_keras.plotting.tile_images(vae_keras.load_vae().generate(7, seed=3))  # 3 columns, 3 rows
    scale = 560 // (28 * 3)
    expected = np.round(expected * 255).astype("uint8").repeat(scale, 0).repeat(scale, 1)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)



def test_cli_generate_writes_a_jpeg_and_refuses_a_folder_or_another_suffix(tmp_path, capsys, monkeypatch):
    from PIL import Image

    out = tmp_path / "digits.jpg"
    assert main(["generate", "--n", "7", "--seed", "3", "--out", str(out)]) == 0
    assert f"to {out} (JPEG, 504 x 504 pixels)" in capsys.readouterr().out
    assert out.read_bytes()[:2] == b"\xff\xd8"
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (504, 504)
    monkeypatch.chdir(tmp_path)
    for bad, message in [(".", "'.' is a folder; give a file name such as generated.png"),
                         ("digits.gif", "'digits.gif' has the suffix '.gif'; write one of .png, .jpg, .jpeg")]:
        assert main(["generate", "--out", bad]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert [item.name for item in tmp_path.iterdir()] == ["digits.jpg"]


def test_cli_generate_digit_draws_that_digit_from_a_conditional_model(tmp_path, capsys, small_mnist):
    from PIL import Image

    config = VAEConfig(conditional=True, epochs=1, batch_size=128, train_size=256, test_size=64, latent_dim=4)
    vae_keras.train(config, output_dir=tmp_path / "run", data=small_mnist, verbose=0)
    model_path = str(tmp_path / "run" / "vae.keras")
    out = tmp_path / "sevens.png"
    assert main(["generate", "--model", model_path, "--digit", "7", "--n", "25", "--seed", "0", "--out", str(out)]) == 0
    assert "Saved 25 generated 7s" in capsys.readouterr().out
    model = vae_keras.load_vae(model_path)
    expected = vae_keras.plotting.tile_images(model.decode_codes(model.prior_codes(25, 0), np.full(25, 7)))
    expected = np.round(expected * 255).astype("uint8").repeat(4, 0).repeat(4, 1)  # 5 columns: 560 // 140
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


def test_cli_generate_digit_errors_name_the_digit_or_the_model(tmp_path, capsys):
    assert main(["generate", "--digit", "7", "--out", str(tmp_path / "x.png")]) == 2
    assert "digit=7 needs a conditional VAE" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--digit", "10", "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "expected a digit from 0 to 9, received '10'" in capsys.readouterr().err


class CheapDecoder:
    """Stands for a VAE in `write_generated`: decodes codes to random grey images at once, so that memory, not decoding, is measured."""

    latent_dim = 2

    class decoder:
        output_shape = (None, 28, 28, 1)

    def prior_labels(self, n, digit=None):
        return None

    def decode_codes(self, codes, labels=None, batch_size=1_000):
        return np.random.default_rng(len(codes)).random((len(codes), 28, 28, 1), dtype="float32")


def test_generating_100000_digits_holds_their_8_bit_tile_not_their_float_images(tmp_path):
    import tracemalloc

    from PIL import Image

    out = tmp_path / "many.png"
    tracemalloc.start()  # NumPy's arrays; the 75 MB 8-bit tile lives in Pillow's own memory
    try:
        vae_keras.plotting.write_generated(CheapDecoder(), 100_000, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Holding the 100,000 float images would take 314 MB (7.1 GB when matplotlib drew them); one row of 317, 1 MB.
    assert peak < 40e6, peak
    with Image.open(out) as image:
        assert image.size == (28 * 317, 28 * 316) and image.mode == "L"


def test_cli_generate_refuses_more_digits_than_its_tile_can_show(tmp_path, capsys):
    assert main(["generate", "--n", "1000001", "--out", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert "n must be an integer from 1 to 1000000 (28x28x1 images in a tile of at most 28,000 x 28,000 grey pixels' worth), received n=1000001" in error
    assert not (tmp_path / "x.png").exists()


def start_on(backend_env, tmp_path):
    """`python -m vae_keras evaluate` in a fresh process with these environment variables: it must fail in one line."""
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    result = subprocess.run([sys.executable, "-m", "vae_keras", "evaluate"], capture_output=True, text=True,
                            cwd=tmp_path, env={**env, **backend_env}, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_a_backend_that_is_not_installed_or_misspelled_is_one_line_from_the_command_line(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    error = start_on({"KERAS_BACKEND": "torch", "PYTHONPATH": str(blocker)}, tmp_path)
    assert error.startswith("error: Keras could not start on torch") and "pip install torch" in error
    error = start_on({"KERAS_BACKEND": "tensorfow"}, tmp_path)
    assert error.startswith("error: Keras could not start on tensorfow") and "KERAS_BACKEND=tensorflow, jax or torch" in error
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text('{"backend": "tensorfow", "floatx": "float32"}')
    error = start_on({"KERAS_HOME": str(keras_home)}, tmp_path)
    assert error.startswith("error: Keras could not start on") and "tensorfow" in error
