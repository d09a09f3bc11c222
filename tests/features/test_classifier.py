"""LinearClassifier: preprocessing, predict, and a safe save/load round trip."""

import os
import pickle

import pytest
import torch

from lit_linear.errors import DataError
from lit_linear.features.classifier import LinearClassifier
from lit_linear.features.preprocess import preprocess


def test_preprocess_scales_subtracts_mean_and_appends_bias():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    mean = torch.rand(3072)
    X = preprocess(images, mean)
    assert X.shape == (5, 3073) and X.dtype == torch.float32
    expected = images.reshape(5, -1).double() / 255 - mean.double()
    assert torch.allclose(X[:, :-1].double(), expected, atol=1e-6)
    assert torch.all(X[:, -1] == 1)
    assert preprocess(images, mean, torch.float64).dtype == torch.float64


def test_preprocess_rejects_wrong_image_size():
    with pytest.raises(ValueError, match="3x32x32"):
        preprocess(torch.zeros(2, 100, dtype=torch.uint8), torch.zeros(3072))


def make_classifier(C=4):
    torch.manual_seed(0)
    return LinearClassifier(torch.randn(3073, C), torch.rand(3072), [f"c{i}" for i in range(C)], {"lr": 0.1})


def test_predict_is_argmax_of_scores_on_raw_images():
    clf = make_classifier()
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    scores = preprocess(images, clf.pixel_mean) @ clf.weight
    assert torch.equal(clf.predict(images), scores.argmax(1))
    assert clf.predict(images).dtype == torch.int64


def test_save_load_round_trip(tmp_path):
    clf = make_classifier()
    path = tmp_path / "model.pt"
    clf.save(path)
    back = LinearClassifier.load(path)
    assert torch.equal(back.weight, clf.weight) and torch.equal(back.pixel_mean, clf.pixel_mean)
    assert back.class_names == clf.class_names and back.info == {"lr": 0.1}
    assert not [p for p in os.listdir(tmp_path) if p != "model.pt"], "no temporary file may be left behind"


def test_load_refuses_other_files(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a lit_linear classifier"):
        LinearClassifier.load(tmp_path / "other.pt")


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_never_runs_code_from_a_hostile_file(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.pt"
    with open(hostile, "wb") as f:
        pickle.dump({"format": "lit_linear.LinearClassifier/1", "weight": _Payload(str(marker))}, f)
    with pytest.raises(pickle.UnpicklingError):
        LinearClassifier.load(hostile)
    assert not marker.exists(), "the payload ran"
    # The file really is hostile: a plain unpickler would run it.
    with open(hostile, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_a_failed_save_leaves_the_earlier_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    make_classifier().save(path)
    original = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        make_classifier(C=5).save(path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["model.pt"]
