"""CapturedCall: a step that cannot be recorded in a CUDA graph runs eagerly, with one warning, and trains the same."""

from __future__ import annotations

import warnings

import pytest
import torch

from lit_linear import LinearClassifierModule
from lit_linear.errors import ConfigError
from lit_linear.maths.graphs import CapturedCall
from lit_linear.maths.optim import GridSGD
from lit_linear.training.step import check_cuda_graph


def train(cuda_graph: bool, steps: int = 6) -> torch.Tensor:
    """``steps`` GridSGD steps on a fixed problem, past the 3 warm-up calls: the final W."""
    gen = torch.Generator().manual_seed(0)
    W = 0.01 * torch.randn(8, 3, 4, generator=gen, dtype=torch.float64)
    X = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    optimizer = GridSGD([W], lr=[0.1, 0.2, 0.3], reg=[0.0, 0.01, 0.1], cuda_graph=cuda_graph)
    for _ in range(steps):
        dscores = X @ W.view(8, 12)  # (5, 12): any data gradient, scaled in place by the step
        optimizer.step(lambda d=dscores: (torch.zeros(3, dtype=torch.float64), X, d))
    return W


def test_an_update_that_cannot_be_recorded_runs_eagerly_with_one_warning():
    """Here no CUDA device exists, so recording fails at its first try: the fit goes on eagerly."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device would record the graph; tests/test_cuda.py makes a capture fail there")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = train(cuda_graph=True)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and said[0].startswith("could not record sgd_update in a CUDA graph (")
    assert torch.equal(graphed, train(cuda_graph=False))


def test_an_error_of_the_function_itself_still_surfaces():
    def broken(x):
        raise ValueError("a bug in the step")

    call = CapturedCall(broken)
    with pytest.raises(ValueError, match="a bug in the step"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        call(torch.zeros(2))


def test_cuda_graphs_are_off_unless_asked_for():
    """The default is what was measured: graphs were never timed on a GPU, so they are an opt-in."""
    model = LinearClassifierModule()
    assert model.hparams.cuda_graph is False
    assert not check_cuda_graph(model.hparams.cuda_graph, torch.device("cuda", 0), world_size=1)
    assert check_cuda_graph(True, torch.device("cuda", 0), world_size=1)
    with pytest.raises(ConfigError, match="model.cuda_graph true needs one CUDA device"):
        check_cuda_graph(True, torch.device("cpu"), world_size=1)
