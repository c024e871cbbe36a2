"""The Part protocol: a user's own part is assembled and certified like the built-in ones."""

import numpy as np
import pytest
import torch
from torch import nn

from stablernn import certify
from stablernn.contraction import JacobianFamily
from stablernn.models import Assembly, NetworkOfNetworks
from stablernn.models.part import Part
from stablernn.models.subnetworks import SVDSubnetwork


class LeakyLinear(nn.Module):
    """``x' = -decay x + u``: contracts at rate ``decay`` in the identity metric."""

    slope_bound = 1.0
    condition = "a user's leaky integrator"

    def __init__(self, size: int, decay: float) -> None:
        super().__init__()
        self.size, self.decay = size, decay

    def metric(self) -> torch.Tensor:
        return torch.eye(self.size)

    def jacobian_family(self) -> JacobianFamily:
        return JacobianFamily(-self.decay * np.eye(self.size), np.zeros((self.size, 0)),
                              np.zeros((0, self.size)), 0.0, 1.0, "J = -decay I")

    def prepare(self):
        return None

    def vector_field(self, x, u, prepared):
        return -self.decay * x + u


def test_a_users_part_is_a_part_and_certifies_with_its_rate():
    part = LeakyLinear(3, 0.4)
    assert isinstance(part, Part)
    certificate = certify(part)
    assert certificate.contracting and certificate.condition == "a user's leaky integrator"
    assert certificate.rate == pytest.approx(0.4, rel=1e-9)
    expanding = certify(LeakyLinear(3, -0.1))
    assert not expanding.contracting and "does not verify" in expanding.reason


def test_a_users_part_joins_an_assembly_and_the_network_runs_certified():
    torch.manual_seed(0)
    assembly = Assembly([LeakyLinear(3, 0.4), SVDSubnetwork(4)], mask="full",
                        feedback_init_std=0.5)
    network = NetworkOfNetworks(2, assembly, step_size=0.1, method="splitting")
    certificate = certify(network)
    assert certificate.contracting and certificate.contracting_as_run, certificate.reason
    output, last = network(torch.randn(5, 2, 2))
    assert torch.isfinite(output).all() and torch.equal(output[-1], last[0])
    with pytest.raises(ValueError, match="is not contracting"):
        Assembly([LeakyLinear(3, -0.1), SVDSubnetwork(4)])
