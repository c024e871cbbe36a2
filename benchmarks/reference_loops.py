"""Plain eager reference loops, written as a user would write them from the papers' equations.

They are the baselines of ``benchmarks/engine_benchmark.py``: no stablernn code runs inside them
(they copy their starting weights from a stablernn model so that every implementation starts from
the same point), no engine, no tricks beyond what a careful user does anyway (build the matrices
once per forward pass, project the whole input sequence with one matmul, ``unbind`` the time
axis instead of indexing a tensor that needs grad).
"""

from __future__ import annotations

import torch
from torch import nn


class LipschitzLoop(nn.Module):
    """Lipschitz RNN, paper 002 eq. 9 (Euler) with eqs. 2a, 2b, 6:

        A = (1 - b)(M_A + M_A^T) + b (M_A - M_A^T) - g_A I   (W likewise)
        h_{t+1} = h_t + eps (A h_t + tanh(W h_t + U x_t + b))
    """

    def __init__(self, input_size: int, hidden_size: int, beta: float = 0.75,
                 gamma_a: float = 0.001, gamma_w: float = 0.001, step_size: float = 0.03):
        super().__init__()
        self.beta, self.gamma_a, self.gamma_w, self.eps = beta, gamma_a, gamma_w, step_size
        self.M_A = nn.Parameter(torch.randn(hidden_size, hidden_size) * 0.1 / hidden_size)
        self.M_W = nn.Parameter(torch.randn(hidden_size, hidden_size) * 0.1 / hidden_size)
        self.U = nn.Linear(input_size, hidden_size)
        self.register_buffer("I", torch.eye(hidden_size))

    @classmethod
    def like(cls, layer) -> "LipschitzLoop":
        """Same sizes, constants and starting weights as a ``stablernn.LipschitzRNN``."""
        cell = layer.cell
        loop = cls(cell.input_size, cell.hidden_size, cell.param_a.beta, cell.param_a.gamma,
                   cell.param_w.gamma, cell.step_size)
        with torch.no_grad():
            loop.M_A.copy_(cell.param_a.free)
            loop.M_W.copy_(cell.param_w.free)
            loop.U.load_state_dict(cell.input_projection.state_dict())
        return loop

    def matrix(self, M: torch.Tensor, gamma: float) -> torch.Tensor:
        return (1 - self.beta) * (M + M.T) + self.beta * (M - M.T) - gamma * self.I

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (T, B, F) -> (states (T, B, N), last state (B, N))."""
        A, W = self.matrix(self.M_A, self.gamma_a), self.matrix(self.M_W, self.gamma_w)
        h = x.new_zeros(x.shape[1], A.shape[0])
        states = []
        for u in self.U(x).unbind(0):
            h = h + self.eps * (h @ A.T + torch.tanh(h @ W.T + u))
            states.append(h)
        return torch.stack(states), h


class SparseComboLoop(nn.Module):
    """Sparse Combo Net, paper 000 eq. 5 with eq. 1 parts and eq. 3 feedback, Euler, with a dense
    block-diagonal matrix of the (fixed) subnetwork weights:

        L = B - M^{-1} B^T M        (B masked to its lower off-diagonal blocks, M the metric)
        x_{t+1} = x_t + dt (-x_t + W relu(x_t) + L x_t + U s_t + b)
    """

    def __init__(self, weight: torch.Tensor, metric: torch.Tensor, mask: torch.Tensor,
                 input_size: int, step_size: float):
        super().__init__()
        size = weight.shape[0]
        self.dt = step_size
        self.register_buffer("W", weight.clone())
        self.register_buffer("M", metric.clone())
        self.register_buffer("M_inv", torch.linalg.inv(metric))
        self.register_buffer("mask", mask.clone())
        self.B = nn.Parameter(torch.zeros(size, size))
        self.U = nn.Linear(input_size, size)

    @classmethod
    def like(cls, layer) -> "SparseComboLoop":
        """Same subnetworks, metric, feedback and input layer as a ``stablernn.SparseComboNet``."""
        assembly = layer.cell.assembly
        weight = torch.block_diag(*[part.weight() for part in assembly.parts])
        loop = cls(weight.detach(), assembly.metric().detach(), assembly.feedback.mask,
                   layer.input_size, layer.step_size)
        with torch.no_grad():
            loop.B.copy_(assembly.feedback.coupling)
            loop.U.load_state_dict(layer.cell.input_projection.state_dict())
        return loop

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s: (T, B, F) -> (states (T, B, N), last state (B, N))."""
        B = self.B * self.mask
        L = B - self.M_inv @ B.T @ self.M
        x = s.new_zeros(s.shape[1], self.W.shape[0])
        states = []
        for u in self.U(s).unbind(0):
            x = x + self.dt * (-x + torch.relu(x) @ self.W.T + x @ L.T + u)
            states.append(x)
        return torch.stack(states), x
