"""Tests for the command line, `python -m vae_keras`: each command, and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

import vae_keras
from vae_keras import VAEConfig
from vae_keras.__main__ import _parser, main


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "vae_keras", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_train_then_evaluate(tmp_path):
    out = tmp_path / "cli"
    result = run_cli(
        "train", "--epochs", "1", "--train-size", "256", "--test-size", "128", "--batch-size", "128",
        "--output-dir", str(out), "--verbose", "2", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Epoch : 1 Test ELBO loss" in result.stdout
    assert (out / "vae.keras").exists() and (out / "history.csv").exists()

    result = run_cli("evaluate", "--model", str(out / "vae.keras"), "--test-size", "200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Test ELBO loss = " in result.stdout and "KL loss = " in result.stdout


def test_cli_errors_are_clear(tmp_path):
    result = run_cli("evaluate", "--model", str(tmp_path / "none.keras"), cwd=tmp_path)
    assert result.returncode != 0
    assert "none.keras" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "--latent-dim", "0", "--output-dir", str(tmp_path / "x"), cwd=tmp_path)
    assert result.returncode != 0
    assert "latent_dim=0" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("train", "--execution-environment", "gpu", "--output-dir", str(tmp_path / "y"), cwd=tmp_path)
    assert result.returncode != 0 and "no GPU" in result.stderr


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
    assert f"to {tmp_path / 'digits.png'}" in capsys.readouterr().out
    # A folder that cannot be written (here: a file stands where the folder
    # should be, which fails even for root) is a one-line error naming it.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    assert main(["generate", "--n", "4", "--out", str(blocker / "digits.png")]) == 2
    error = capsys.readouterr().err
    assert str(blocker) in error and "Traceback" not in error


def test_cli_missing_model_file(tmp_path):
    missing = tmp_path / "nonexistent.keras"
    result = run_cli("generate", "--model", missing, "--out", tmp_path / "x.png", cwd=tmp_path)
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_corrupt_model_file(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a keras archive" * 10)
    result = run_cli("generate", "--model", corrupt, "--out", tmp_path / "x.png", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not load a model" in result.stderr and str(corrupt) in result.stderr
    assert "Traceback" not in result.stderr




def test_cli_generate_writes_the_digits_of_generate_one_pixel_each(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "seven.png"
    assert main(["generate", "--n", "7", "--seed", "3", "--out", str(out)]) == 0
    assert "Saved 7 generated digits" in capsys.readouterr().out
    expected = vae_keras.plotting.tile_images(vae_keras.load_vae().generate(7, seed=3))  # 3 columns, 3 rows
    scale = 560 // (28 * 3)
    expected = np.round(expected * 255).astype("uint8").repeat(scale, 0).repeat(scale, 1)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)



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


GENERATE_PEAK_SCRIPT = """
import sys
from vae_keras.__main__ import main

def kilobytes(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field)).split()[1])

open("/proc/self/clear_refs", "w").write("5")
before = kilobytes("VmRSS:")
status = main(["generate", "--n", "100000", "--out", sys.argv[1]])
print("status", status, "peak_mb", (kilobytes("VmHWM:") - before) / 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="measures memory with Linux's /proc")
def test_cli_generate_of_100000_digits_holds_one_row_at_a_time(tmp_path):
    from PIL import Image

    out = tmp_path / "many.png"
    process = subprocess.run([sys.executable, "-c", GENERATE_PEAK_SCRIPT, str(out)], capture_output=True, text=True,
                             timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    status, peak = process.stdout.split("status")[1].split("peak_mb")
    assert int(status) == 0
    assert float(peak) < 300, process.stdout  # it was 7.1 GB when the digits were held, then drawn by matplotlib
    with Image.open(out) as image:
        assert image.size == (28 * 317, 28 * 316) and image.mode == "L"


def test_cli_generate_refuses_more_digits_than_its_tile_can_show(tmp_path, capsys):
    assert main(["generate", "--n", "1000001", "--out", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert "n must be an integer from 1 to 1000000 (a 28,000 x 28,000-pixel tile), received n=1000001" in error
    assert not (tmp_path / "x.png").exists()


def test_cli_huge_latent_dim_and_a_backend_that_is_not_installed_are_one_line_errors(tmp_path):
    result = run_cli("train", "--latent-dim", "100000000", "--output-dir", str(tmp_path / "x"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "latent_dim must be an integer from 1 to 784 (the pixels of an image), received latent_dim=100000000" in result.stderr
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(blocker)}
    result = subprocess.run([sys.executable, "-m", "vae_keras", "evaluate"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: Keras could not start on torch") and "pip install torch" in result.stderr
