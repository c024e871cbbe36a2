"""The engine on a GPU: its pure-PyTorch path (the native kernels are CPU only) runs every
recurrence on CUDA tensors with the states and gradients of the plain loop. Skipped without a
GPU."""

import copy

import pytest
import torch

from stablernn.engine import backend_for
from stablernn.models.lipschitz import LipschitzRNN
from stablernn.models.network import SparseComboNet, SVDComboNet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def layers():
    torch.manual_seed(0)
    for method in ("euler", "exponential", "rk2"):
        yield f"lipschitz-{method}", LipschitzRNN(2, 16, method=method, step_size=0.1,
                                                         parametrization="paper")
    for method in ("euler", "splitting", "rk2"):
        yield f"sparse-{method}", SparseComboNet(2, num_subnetworks=3, subnetwork_size=4,
                                                 density=0.5, seed=0, method=method,
                                                 feedback_init_std=0.1)
        yield f"svd-{method}", SVDComboNet(2, num_subnetworks=3, subnetwork_size=4,
                                           method=method, feedback_init_std=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,layer", list(layers()))
def test_engine_on_cuda_matches_the_loop(name, layer, dtype):
    device = torch.device("cuda")
    engine = layer.to(device, dtype)
    loop = copy.deepcopy(engine)
    loop.engine = "loop"
    inputs = torch.randn(30, 5, 2, device=device, dtype=dtype)
    assert backend_for(inputs) == "python"  # CUDA tensors take the PyTorch path
    results = []
    for model in (engine, loop):
        model.zero_grad()
        output, last = model(inputs)
        (output.square().sum() + last.sum()).backward()
        results.append((output.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                                          if p.grad is not None}))
    (output_engine, grads_engine), (output_loop, grads_loop) = results
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(output_engine, output_loop, rtol=tolerance, atol=tolerance)
    assert grads_engine.keys() == grads_loop.keys()
    for key, expected in grads_loop.items():
        scale = max(expected.abs().max().item(), 1e-3)
        assert (grads_engine[key] - expected).abs().max().item() <= tolerance * 10 * scale, key
