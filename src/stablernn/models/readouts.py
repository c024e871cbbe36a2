"""Readouts on top of a recurrent layer (paper 002 eq. 1b: ``y = D h``)."""

from __future__ import annotations

import torch
from torch import nn

from stablernn._checks import check_positive_int


def _states(rnn: nn.Module, input: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    output, _ = rnn(input, h0) if h0 is not None else rnn(input)
    return output


class _Readout(nn.Module):
    def __init__(self, rnn: nn.Module, outputs: int, name: str) -> None:
        super().__init__()
        self.rnn = rnn
        setattr(self, name, check_positive_int(name, outputs))
        self.readout = nn.Linear(rnn.hidden_size, outputs)


class SequenceClassifier(_Readout):
    """Linear readout of the last hidden state: ``logits = D h_T + c``.

    Works with any layer that returns ``(output, h_n)`` like ``torch.nn.RNN`` (stablernn layers,
    ``nn.LSTM``, ``nn.GRU``). Returns ``(B, num_classes)``, or ``(num_classes,)`` unbatched.
    """

    def __init__(self, rnn: nn.Module, num_classes: int) -> None:
        super().__init__(rnn, num_classes, "num_classes")

    def forward(self, input: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        # h_n, not output[-1]: the same state, without a dense (T, B, N) gradient in backward
        _, last = self.rnn(input, h0) if h0 is not None else self.rnn(input)
        if isinstance(last, tuple):  # nn.LSTM: (h_n, c_n)
            last = last[0]
        return self.readout(last[-1])


class PerStepReadout(_Readout):
    """Linear readout at every time step, for sequence-to-sequence tasks: ``y_t = D h_t + c``.

    Returns outputs laid out like the layer's ``output`` with ``output_size`` features.
    """

    def __init__(self, rnn: nn.Module, output_size: int) -> None:
        super().__init__(rnn, output_size, "output_size")

    def forward(self, input: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        return self.readout(_states(self.rnn, input, h0))
