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


def midpoint(x: torch.Tensor, field, dt: float) -> torch.Tensor:
    """One explicit midpoint (RK2) step of ``x' = field(x)``."""
    return x + dt * field(x + 0.5 * dt * field(x))


class LipschitzLoop(nn.Module):
    """Lipschitz RNN, paper 002 eqs. 1, 2a, 2b, 6 with ``method``:

        A = (1 - b)(M_A + M_A^T) + b (M_A - M_A^T) - g_A I   (W likewise)
        f(h) = A h + tanh(W h + U x_t + b)
        euler (eq. 9):   h_{t+1} = h_t + eps f(h_t)
        rk2 (eq. 10):    h_{t+1} = h_t + eps f(h_t + eps/2 f(h_t))
        exponential:     h_{t+1} = exp(eps A) h_t + eps tanh(W h_t + U x_t + b)
    """

    def __init__(self, input_size: int, hidden_size: int, beta: float = 0.75,
                 gamma_a: float = 0.001, gamma_w: float = 0.001, step_size: float = 0.03,
                 method: str = "euler", max_norm: float | None = None):
        super().__init__()
        self.beta, self.gamma_a, self.gamma_w, self.eps = beta, gamma_a, gamma_w, step_size
        self.method, self.max_norm = method, max_norm
        self.M_A = nn.Parameter(torch.randn(hidden_size, hidden_size) * 0.1 / hidden_size)
        self.M_W = nn.Parameter(torch.randn(hidden_size, hidden_size) * 0.1 / hidden_size)
        self.U = nn.Linear(input_size, hidden_size)
        self.register_buffer("I", torch.eye(hidden_size))

    @classmethod
    def like(cls, layer) -> "LipschitzLoop":
        """Same sizes, constants, method and starting weights as a ``stablernn.LipschitzRNN``
        (the contracting parametrization: A = skew - gamma I, W scaled to norm <= max_norm)."""
        cell = layer.cell
        contracting = cell.parametrization == "contracting"
        free_w = cell.param_w.inner if contracting else cell.param_w
        loop = cls(cell.input_size, cell.hidden_size, free_w.beta, cell.param_a.gamma,
                   free_w.gamma, cell.step_size, cell.method,
                   cell.param_w.max_norm if contracting else None)
        loop.beta_a = cell.param_a.beta
        with torch.no_grad():
            loop.M_A.copy_(cell.param_a.free)
            loop.M_W.copy_(free_w.free)
            loop.U.load_state_dict(cell.input_projection.state_dict())
        return loop

    beta_a: float | None = None

    def matrix(self, M: torch.Tensor, gamma: float, beta: float) -> torch.Tensor:
        return (1 - beta) * (M + M.T) + beta * (M - M.T) - gamma * self.I

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (T, B, F) -> (states (T, B, N), last state (B, N))."""
        A = self.matrix(self.M_A, self.gamma_a, self.beta if self.beta_a is None else self.beta_a)
        W = self.matrix(self.M_W, self.gamma_w, self.beta)
        if self.max_norm is not None:
            W = W * (self.max_norm / torch.clamp(torch.linalg.matrix_norm(W, 2), min=1.0))
        transition = torch.linalg.matrix_exp(self.eps * A) if self.method == "exponential" \
            else None
        h = x.new_zeros(x.shape[1], A.shape[0])
        states = []
        for u in self.U(x).unbind(0):
            if self.method == "exponential":
                h = h @ transition.T + self.eps * torch.tanh(h @ W.T + u)
            elif self.method == "rk2":
                h = midpoint(h, lambda v, u=u: v @ A.T + torch.tanh(v @ W.T + u), self.eps)
            else:
                h = h + self.eps * (h @ A.T + torch.tanh(h @ W.T + u))
            states.append(h)
        return torch.stack(states), h


class ComboLoop(nn.Module):
    """Sparse and SVD Combo Nets, paper 000 eq. 5 with eq. 1 parts and eq. 3 feedback, with a
    dense block-diagonal matrix W of the subnetwork weights and ``method``:

        L = B - M^{-1} B^T M        (B masked to its lower off-diagonal blocks, M the metric)
        f(x) = -x + W relu(x) + L x + U s_t + b
        euler: x_{t+1} = x_t + dt f(x_t);   rk2: the explicit midpoint rule
        splitting: y = Q x_t with Q = (I - dt/2 L)^{-1} (I + dt/2 L) (the feedback's trapezoidal
                   step), then x_{t+1} = y + dt (-y + W relu(y) + U s_t + b)

    Sparse: W fixed (a buffer). SVD: each block ``Theta^{-1} U_k Sigma_k V_k^T Theta`` from
    torch's orthogonal parametrization, trained, and M = Theta^2.
    """

    def __init__(self, weight: torch.Tensor | None, metric: torch.Tensor | None,
                 mask: torch.Tensor, input_size: int, step_size: float, method: str,
                 svd_parts: list[nn.Module] | None = None):
        super().__init__()
        size = mask.shape[0]
        self.dt, self.method = step_size, method
        if weight is not None:
            self.register_buffer("W", weight.clone())
            self.register_buffer("M", metric.clone())
            self.register_buffer("M_inv", torch.linalg.inv(metric))
        self.svd_parts = nn.ModuleList(svd_parts or [])
        self.register_buffer("mask", mask.clone())
        self.B = nn.Parameter(torch.zeros(size, size))
        self.U = nn.Linear(input_size, size)
        self.register_buffer("I", torch.eye(size))

    @classmethod
    def like(cls, layer) -> "ComboLoop":
        """Same subnetworks, metric, feedback, input layer and method as a stablernn
        ``SparseComboNet`` or ``SVDComboNet``."""
        assembly = layer.cell.assembly
        parts = assembly.parts
        if hasattr(parts[0], "singular_logits"):  # SVD parts: trained, rebuilt by this loop
            copies = []
            for part in parts:
                block = SVDBlock(part.size, part.sigma_max, part.max_log_scale)
                block.load_state_dict(part.state_dict())
                copies.append(block)
            loop = cls(None, None, assembly.feedback.mask, layer.input_size, layer.step_size,
                       layer.method, copies)
        else:
            weight = torch.block_diag(*[part.weight() for part in parts])
            loop = cls(weight.detach(), assembly.metric().detach(), assembly.feedback.mask,
                       layer.input_size, layer.step_size, layer.method)
        with torch.no_grad():
            loop.B.copy_(assembly.feedback.coupling)
            loop.U.load_state_dict(layer.cell.input_projection.state_dict())
        return loop

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, L) for this forward pass."""
        if self.svd_parts:
            W = torch.block_diag(*[block.weight() for block in self.svd_parts])
            scales = torch.cat([block.exponent() for block in self.svd_parts])
            M, M_inv = torch.diag(torch.exp(2 * scales)), torch.diag(torch.exp(-2 * scales))
        else:
            W, M, M_inv = self.W, self.M, self.M_inv
        B = self.B * self.mask
        return W, B - M_inv @ B.T @ M

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s: (T, B, F) -> (states (T, B, N), last state (B, N))."""
        W, L = self.matrices()
        x = s.new_zeros(s.shape[1], W.shape[0])
        if self.method == "splitting":
            Q = torch.linalg.solve(self.I - 0.5 * self.dt * L, self.I + 0.5 * self.dt * L)
        states = []
        for u in self.U(s).unbind(0):
            if self.method == "splitting":
                y = x @ Q.T
                x = y + self.dt * (-y + torch.relu(y) @ W.T + u)
            elif self.method == "rk2":
                x = midpoint(x, lambda v, u=u: -v + torch.relu(v) @ W.T + v @ L.T + u, self.dt)
            else:
                x = x + self.dt * (-x + torch.relu(x) @ W.T + x @ L.T + u)
            states.append(x)
        return torch.stack(states), x


class SVDBlock(nn.Module):
    """One SVD subnetwork (paper 000, Theorem 5): ``W = Theta^{-1} U Sigma V^T Theta``, U and V
    orthogonal (torch's parametrization), ``Sigma = sigma_max sigmoid(s)``,
    ``Theta = diag(exp(theta))`` (``theta = c tanh(log_scale / c)`` when bounded by c)."""

    def __init__(self, size: int, sigma_max: float, max_log_scale: float | None):
        super().__init__()
        self.sigma_max, self.max_log_scale = sigma_max, max_log_scale
        self.left = nn.utils.parametrizations.orthogonal(nn.Linear(size, size, bias=False))
        self.right = nn.utils.parametrizations.orthogonal(nn.Linear(size, size, bias=False))
        self.singular_logits = nn.Parameter(torch.zeros(size))
        self.log_scale = nn.Parameter(torch.zeros(size))

    def exponent(self) -> torch.Tensor:
        if self.max_log_scale is None:
            return self.log_scale
        return self.max_log_scale * torch.tanh(self.log_scale / self.max_log_scale)

    def weight(self) -> torch.Tensor:
        theta = torch.exp(self.exponent())
        core = self.left.weight @ torch.diag(self.sigma_max * torch.sigmoid(self.singular_logits))
        return torch.diag(1 / theta) @ core @ self.right.weight.T @ torch.diag(theta)
