"""Tests for `vae_keras.train`: the protocol, the run folder across kills and resumes, reproducibility, stopping.

Trained runs are shared: `whole` (3 epochs) is the uninterrupted run every
resume must repeat, epoch for epoch; tests that only check a refusal work on
copies of run folders without training (tests/test_run_folder.py). On JAX and
PyTorch (tests/test_backends.py) only the unmarked tests run: an exact resume
of a KL warm-up, whose weight is state the backend's step must carry.
"""

import dataclasses
import gc
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import vae_keras
from vae_keras import VAEConfig, run_folder, training

SMALL = dict(train_size=512, test_size=128, batch_size=128, eval_batch_size=128)
# Same seed, same losses, and an exact resume, are promised on the CPU (GPU
# kernels may sum in any order), so these run there on every machine.
CPU = dict(SMALL, execution_environment="cpu")
CONFIG = VAEConfig(epochs=3, shuffle=True, **CPU)


class Interrupt(keras.callbacks.Callback):
    """Stops the run partway through an epoch, as Ctrl-C or a killed process would."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def whole(tmp_path_factory, small_mnist):
    """The uninterrupted 3-epoch run (shuffled, CPU), and the batches it read."""
    requested = []
    get_batch = training.EpochBatches.__getitem__

    def recording(self, index):
        requested.append(index)
        return get_batch(self, index)

    training.EpochBatches.__getitem__ = recording
    try:
        result = training.train(CONFIG, tmp_path_factory.mktemp("whole") / "run", data=small_mnist, verbose=0)
    finally:
        training.EpochBatches.__getitem__ = get_batch
    return result, requested


def assert_same_run(history, reference):
    for name in ("elbo", "val_elbo", "kl_loss", "reconstruction_loss"):
        np.testing.assert_allclose(history[name], reference[name], rtol=1e-6)


@pytest.mark.slow_off_tensorflow
def test_train_reads_each_batch_once_in_order_and_writes_history_and_model(whole, capsys):
    result, requested = whole
    steps = CONFIG.steps_per_epoch()
    # Batch i is epoch i // steps: read in order, never reshuffled by fit (Keras
    # may first peek at a batch or two to learn their shapes).
    assert requested[-3 * steps :] == list(range(3 * steps)) and len(requested) <= 3 * steps + 2
    history = result.history
    assert history["epoch"] == [1, 2, 3]
    for column in ("elbo", "reconstruction_loss", "kl_loss", "val_elbo", "epoch_seconds"):
        assert len(history[column]) == 3 and all(np.isfinite(history[column]))
    assert history["val_elbo"][2] < history["val_elbo"][0]
    restored = vae_keras.load_vae(result.output_dir / "vae.keras")
    for a, b in zip(restored.weights, result.model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow_off_tensorflow
def test_the_same_seed_gives_the_same_losses_and_the_reference_line_is_printed(whole, tmp_path, small_mnist, capsys):
    again = training.train(CONFIG, tmp_path / "again", data=small_mnist, verbose=2)
    assert again.history["elbo"] == whole[0].history["elbo"]
    assert again.history["val_elbo"] == whole[0].history["val_elbo"]
    printed = capsys.readouterr().out.splitlines()
    lines = [text for text in printed if text.startswith("Epoch : ")]
    assert len(lines) == 3 and "Test ELBO loss = " in lines[0] and "Time taken for epoch = " in lines[0]
    assert not [text for text in printed if " - elbo: " in text or text.startswith("Epoch 1/")]  # no Keras line
    other = training.train(dataclasses.replace(CONFIG, seed=1, epochs=1), tmp_path / "c", data=small_mnist, verbose=0)
    assert other.history["elbo"][0] != whole[0].history["elbo"][0]


@pytest.mark.slow_off_tensorflow
def test_interrupted_in_its_first_epoch_then_its_second_it_resumes_to_the_uninterrupted_run(whole, tmp_path, small_mnist, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(CONFIG, run_dir, data=small_mnist, verbose=0, callbacks=[Interrupt(0, 1)])
    assert not (run_dir / "vae.keras").exists()  # nothing finished yet
    with pytest.raises(KeyboardInterrupt):
        training.train(CONFIG, run_dir, data=small_mnist, verbose=1, callbacks=[Interrupt(1, 1)])
    assert "starts again from epoch 1" in capsys.readouterr().out
    assert run_folder.read_history(run_dir / "history.csv")["epoch"] == [1]
    assert run_folder.RunFolder(run_dir).latest_checkpoint().epoch == 1
    resumed = training.train(CONFIG, run_dir, data=small_mnist, verbose=0)
    assert resumed.history["epoch"] == [1, 2, 3]
    assert_same_run(resumed.history, whole[0].history)


@pytest.mark.slow_off_tensorflow
def test_a_finished_run_is_returned_at_once_and_rebuilds_what_a_kill_left_behind(whole, tmp_path, small_mnist, capsys, monkeypatch):
    run_dir = shutil.copytree(whole[0].output_dir, tmp_path / "run")
    (run_dir / "vae.keras").unlink()  # a kill after the last checkpoint: the model file not yet linked
    history = run_dir / "history.csv"
    history.write_text(history.read_text()[:-7])  # and the history cut mid-row
    monkeypatch.setattr(keras.Model, "fit", lambda *args, **kwargs: pytest.fail("a finished run was trained again"))
    result = training.train(CONFIG, run_dir, data=small_mnist, verbose=1)
    assert "holds this finished run (3 epochs): loaded, not trained again" in capsys.readouterr().out
    assert_same_run(result.history, whole[0].history)
    assert run_folder.read_history(history)["epoch"] == [1, 2, 3]
    for a, b in zip(vae_keras.load_vae(run_dir / "vae.keras").weights, whole[0].model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow_off_tensorflow
def test_more_epochs_carry_on_from_the_last_one_as_fit_initial_epoch_would(whole, tmp_path, small_mnist):
    run_dir = tmp_path / "run"
    short = training.train(dataclasses.replace(CONFIG, epochs=2), run_dir, data=small_mnist, verbose=0)
    assert short.history["epoch"] == [1, 2]
    longer = training.train(CONFIG, run_dir, data=small_mnist, verbose=0)
    assert longer.history["epoch"] == [1, 2, 3]
    assert_same_run(longer.history, whole[0].history)
    with pytest.raises(FileExistsError, match="holds a run of 3 finished epochs, more than epochs=2"):
        training.train(dataclasses.replace(CONFIG, epochs=2), run_dir, data=small_mnist, verbose=0)
    with pytest.raises(FileExistsError, match="another configuration: learning_rate"):
        training.train(dataclasses.replace(CONFIG, learning_rate=0.01), run_dir, data=small_mnist, verbose=0)
    assert training.train(dataclasses.replace(CONFIG, epochs=1), run_dir, data=small_mnist, verbose=0,
                          overwrite=True).history["epoch"] == [1]


def test_one_training_per_folder_at_a_time(tmp_path, small_mnist):
    fcntl = pytest.importorskip("fcntl", reason="advisory file locks are POSIX-only")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / run_folder.LOCK_FILE, "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running training holds it
        with pytest.raises(RuntimeError, match="in use by another training"):
            training.train(VAEConfig(epochs=1, **CPU), run_dir, data=small_mnist, verbose=0)
    assert [path.name for path in run_dir.iterdir()] == [run_folder.LOCK_FILE]  # the refused run touched nothing


@pytest.mark.slow_off_tensorflow
def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_model(tmp_path, small_mnist):
    run_dir = tmp_path / "run"
    with pytest.raises(training.TrainingDiverged, match="NaN") as error_info:
        training.train(VAEConfig(epochs=3, learning_rate=1e12, **SMALL), run_dir, data=small_mnist, verbose=0)
    assert "learning_rate=1000000000000.0" in str(error_info.value)
    if (run_dir / "vae.keras").exists():
        assert str(run_dir / "vae.keras") in str(error_info.value)
        assert all(np.isfinite(w).all() for w in vae_keras.load_vae(run_dir / "vae.keras").get_weights())
    else:  # diverged in its first epoch: the message must not point to a missing file
        assert "No epoch finished" in str(error_info.value)


@pytest.mark.slow_off_tensorflow
def test_a_dead_decoder_stops_the_run_naming_the_learning_rate(tmp_path, small_mnist):
    # learning_rate=0.1: the KL term explodes in epoch 1, every ReLU of the decoder
    # dies, and it draws one flat grey square for every code, with no NaN to see.
    with pytest.raises(training.TrainingDiverged, match="the decoder draws the same flat image .* for every code") as error_info:
        training.train(VAEConfig(epochs=3, learning_rate=0.1, **SMALL), tmp_path / "run", data=small_mnist, verbose=0)
    assert "learning_rate=0.1" in str(error_info.value) and "too high a learning rate" in str(error_info.value)
    assert not (tmp_path / "run" / "vae.keras").exists()  # the dead epoch is not kept


class CtrlCInGarbageCollection(keras.callbacks.Callback):
    """Sends SIGINT to this process from inside a garbage-collector callback, as JAX's `_xla_gc_callback` met it."""

    def on_train_batch_end(self, batch, logs=None):
        if batch != 1 or self.model.stop_training:
            return

        def in_gc(phase, info):
            if phase == "start":
                gc.callbacks.remove(in_gc)
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # Python runs the handler here: an exception raised now is ignored
                    pass

        gc.callbacks.append(in_gc)
        gc.collect()


@pytest.mark.slow_off_tensorflow
def test_a_ctrl_c_during_garbage_collection_still_stops_the_run_and_the_same_command_resumes(tmp_path, small_mnist):
    run_dir = tmp_path / "run"
    config = VAEConfig(epochs=2, **CPU)
    before = signal.getsignal(signal.SIGINT)  # Python's own handler; SIG_IGN under nohup
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_mnist, verbose=0, callbacks=[CtrlCInGarbageCollection()])
    assert not (run_dir / "vae.keras").exists()  # stopped in epoch 1, not trained to the end
    assert signal.getsignal(signal.SIGINT) is before  # the handler the run found is back


class CtrlCAfterTheLastEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.params["epochs"]:
            os.kill(os.getpid(), signal.SIGINT)  # after the last checkpoint was written


@pytest.mark.slow_off_tensorflow
def test_a_ctrl_c_after_the_last_checkpoint_leaves_a_finished_run_that_the_same_command_returns(tmp_path, small_mnist, capsys):
    from vae_keras.__main__ import main

    run_dir = tmp_path / "run"
    config = VAEConfig(epochs=1, **CPU)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_mnist, verbose=0, callbacks=[CtrlCAfterTheLastEpoch()])
    assert run_folder.RunFolder(run_dir).latest_checkpoint().epoch == 1
    args = ["train", "--epochs", "1", "--train-size", "512", "--test-size", "128", "--batch-size", "128",
            "--eval-batch-size", "128", "--execution-environment", "cpu", "--output-dir", str(run_dir), "--verbose", "1"]
    assert main(args) == 0  # "Run the same command again" holds: it returns the finished run
    assert "holds this finished run (1 epochs): loaded, not trained again" in capsys.readouterr().out


@pytest.mark.slow_off_tensorflow
def test_mixed_bfloat16_trains_to_the_float32_loss(whole, tmp_path, small_mnist):
    # bfloat16 arithmetic changes the rounding, not what is computed: after a few
    # epochs the test ELBO is the float32 run's to within the spread another seed gives.
    bfloat16 = training.train(dataclasses.replace(CONFIG, precision="mixed_bfloat16"), tmp_path / "b", data=small_mnist, verbose=0)
    seed1 = training.train(dataclasses.replace(CONFIG, seed=1), tmp_path / "s", data=small_mnist, verbose=0)
    final = {"float32": whole[0].history["val_elbo"][-1], "bfloat16": bfloat16.history["val_elbo"][-1],
             "seed1": seed1.history["val_elbo"][-1]}
    assert final["bfloat16"] < bfloat16.history["val_elbo"][0]  # it learns
    assert final["bfloat16"] != final["float32"]  # it really ran in bfloat16
    seed_spread = abs(final["seed1"] - final["float32"])
    assert abs(final["bfloat16"] - final["float32"]) < max(2 * seed_spread, 0.03 * final["float32"])


@pytest.mark.slow_off_tensorflow
def test_a_real_full_disk_is_one_line_and_loses_no_finished_epoch(tmp_path, capsys):
    from vae_keras.__main__ import main

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    # 5 MB: room for epoch 1's checkpoint (3.2 MB), not for epoch 2's beside it.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'needs root'})")
    try:
        run_dir = mount_point / "run"
        args = ["train", "--epochs", "2", "--train-size", "512", "--test-size", "128", "--batch-size", "128",
                "--eval-batch-size", "128", "--execution-environment", "cpu", "--verbose", "0", "--output-dir", str(run_dir)]
        assert main(args) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: [Errno 28] No space left on device while writing") and error.count("\n") == 1
        assert run_folder.RunFolder(run_dir).latest_checkpoint().epoch == 1  # the finished epoch is kept
        assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["epoch-0001"]  # no partial folder
        vae_keras.load_vae(run_dir / "vae.keras")  # the last good model is whole
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


KILL_SCRIPT = """
import sys
import vae_keras
(x_train, y_train), (x_test, y_test) = vae_keras.load_mnist()
data = ((x_train[:512], y_train[:512]), (x_test[:128], y_test[:128]))
config = vae_keras.VAEConfig(epochs=3, shuffle=True, train_size=512, test_size=128, batch_size=128,
                             eval_batch_size=128, execution_environment="cpu")
vae_keras.train(config, output_dir=sys.argv[1], data=data, verbose=1)
"""


@pytest.mark.slow_off_tensorflow
def test_sigkill_at_chosen_moments_then_resume_equals_the_uninterrupted_run(whole, tmp_path):
    import time

    def start(run_dir):
        return subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(run_dir)], stdout=subprocess.PIPE, text=True)

    run_dir = tmp_path / "killed"
    # SIGKILL right after an epoch's line (while its files are written), and a little later.
    for epoch, delay in ((1, 0.0), (2, 0.05)):
        process = start(run_dir)
        for line in process.stdout:
            if line.startswith(f"Epoch : {epoch} "):
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
        assert process.returncode == -signal.SIGKILL
    assert start(run_dir).wait(timeout=600) == 0
    resumed = run_folder.read_history(run_dir / "history.csv")
    assert resumed["epoch"] == [1, 2, 3]
    assert_same_run(resumed, whole[0].history)


def test_a_kl_warmup_continues_exactly_across_a_resume_and_the_beta_run_logs_the_true_elbo(tmp_path, small_mnist):
    # Two batches an epoch: the interrupt below falls in epoch 2's second and last one.
    config = VAEConfig(epochs=3, beta=2.0, kl_warmup_epochs=2, **dict(CPU, train_size=256, test_size=64))
    whole = training.train(config, tmp_path / "whole", data=small_mnist, verbose=0)
    assert float(np.asarray(whole.model.kl_weight)) == 2.0  # epoch 3: 2.0 * min(1, 2 / 2)
    assert [vae_keras.training.kl_weight_at(whole.model, epoch) for epoch in range(3)] == [0.0, 1.0, 2.0]
    history = whole.history
    np.testing.assert_allclose(history["val_elbo"], np.add(history["val_reconstruction_loss"], history["val_kl_loss"]), rtol=1e-5)
    (_, _), (x_test, _) = small_mnist
    whole.model.sampling.reseed(0)
    loss, terms = whole.model.loss_and_terms(x_test[:64])
    terms = {name: np.asarray(keras.ops.convert_to_numpy(value)) for name, value in terms.items()}
    np.testing.assert_allclose(terms["elbo"], terms["reconstruction_loss"] + terms["kl_loss"], rtol=1e-5)
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(loss)),
                               np.mean(terms["reconstruction_loss"] + 2.0 * terms["kl_loss"]), rtol=1e-5)
    reloaded = vae_keras.load_vae(whole.output_dir / "vae.keras")
    assert (reloaded.beta, reloaded.kl_warmup_epochs, float(np.asarray(reloaded.kl_weight))) == (2.0, 2, 2.0)

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run_dir, data=small_mnist, verbose=0, callbacks=[Interrupt(1, 1)])
    resumed = training.train(config, run_dir, data=small_mnist, verbose=0)
    assert resumed.history["val_elbo"] == whole.history["val_elbo"]


@pytest.mark.slow_off_tensorflow
def test_a_bernoulli_run_trains_and_reloads(tmp_path, small_mnist):
    result = training.train(VAEConfig(epochs=1, likelihood="bernoulli", **CPU), tmp_path / "run", data=small_mnist, verbose=0)
    assert result.history["val_elbo"][0] > 100  # summed cross-entropy: another scale than the Gaussian's ~30 after one short epoch
    reloaded = vae_keras.load_vae(result.output_dir / "vae.keras")
    assert reloaded.likelihood == "bernoulli" and reloaded.kl_weight is None


def test_a_floatx_other_than_float32_is_one_clear_error(tmp_path, small_mnist):
    keras.config.set_floatx("float16")
    try:
        with pytest.raises(ValueError, match="Keras' floatx is 'float16' .*set \"floatx\": \"float32\""):
            training.train(VAEConfig(epochs=1, **CPU), tmp_path / "run", data=small_mnist, verbose=0)
        with pytest.raises(ValueError, match="floatx"):
            training.evaluate(vae_keras.load_vae(), small_mnist[1][0][:8])
    finally:
        keras.config.set_floatx("float32")
    assert not (tmp_path / "run").exists()
