"""Tests for vae_keras.records: the run folder's files, written whole or not at all."""

import pytest

import vae_keras
from vae_keras import records


def test_read_history_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.csv"):
        records.read_history(tmp_path / "nothing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv"):
        records.read_history(bad)


def test_the_model_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    model = vae_keras.VAE(latent_dim=2, seed=0)
    path = tmp_path / "vae.keras"
    records.save_model(model, path)
    before = path.read_bytes()

    def dies_half_way(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(before[: len(before) // 2])
        raise KeyboardInterrupt  # a kill while the file is written

    monkeypatch.setattr(vae_keras.VAE, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        records.save_model(model, path)
    assert path.read_bytes() == before  # the last good model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.keras"]  # no partial file left
