"""Input perturbations and adversarial attacks on sequence classifiers (paper 002, section 7).

Figure 2 of paper 002 perturbs every input ``x_1, ..., x_T`` with white noise and with salt and
pepper noise; table 3 attacks with projected gradient descent (PGD, l_inf ball, 7 iterations,
step 0.01) and DeepFool (l_2 and l_inf, 7 iterations). The attacks are written here, batched,
with ``torch.autograd.grad`` and the model in evaluation mode; ``docs/analysis.md`` compares them
with the original algorithms.

Layout: ``inputs`` is ``(B, T, F)`` with the batch first, as stablernn's bundled tasks give them
(the model's layer must be ``batch_first=True``); ``targets`` ``(B,)`` class indices; the model
returns logits ``(B, C)``. The attacks assume the samples of a batch do not interact in the
forward pass (true of every stablernn model in evaluation mode), so one backward pass of a summed
loss gives every sample's own gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stablernn._checks import (
    check_choice,
    check_in_range,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
)

NOISE_KINDS = ("white", "salt-and-pepper")
ATTACKS = ("pgd", "deepfool-l2", "deepfool-linf")
NORMS = ("l2", "linf")
PAPER_STEPS = 7  # paper 002, section 7: "using 7 iterations"
# Added to |f'_l| in every DeepFool step, as the authors' implementation, so that a step
# reaches a little past the linearized boundary even when |f'_l| is ~0.
DEEPFOOL_MARGIN = 1e-4


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_inputs(inputs: Tensor) -> None:
    if (
        not isinstance(inputs, Tensor) or not inputs.is_floating_point() or inputs.dim() < 2
        or inputs.numel() == 0
    ):
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(
            f"inputs must be a non-empty floating-point tensor (batch, ...), got {shape}")


def _check_batch(model: nn.Module, inputs: Tensor, targets: Tensor | None = None) -> None:
    _check_inputs(inputs)
    rnn = getattr(model, "rnn", None)
    if rnn is not None and inputs.dim() == 3 and getattr(rnn, "batch_first", True) is False:
        raise ValueError(
            "model.rnn has batch_first=False, but inputs are (batch, time, features); build the "
            "layer with batch_first=True"
        )
    if targets is not None and (
        not isinstance(targets, Tensor) or targets.dim() != 1 or targets.shape[0] != inputs.shape[0]
        or targets.is_floating_point()
    ):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(
            f"targets must be a 1-D integer tensor of {inputs.shape[0]} class indices, got {shape}"
        )


def _logits(model: nn.Module, inputs: Tensor) -> Tensor:
    logits = model(inputs)
    if logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"model must return logits (batch, classes) = ({inputs.shape[0]}, C), got "
            f"{tuple(logits.shape)}"
        )
    return logits


def _per_sample_norm(perturbation: Tensor, norm: str) -> Tensor:
    flat = perturbation.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def white_noise(inputs: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """``inputs + e`` with ``e`` i.i.d. ``N(0, std^2)`` in every element (paper 002, figure 2)."""
    _check_inputs(inputs)
    std = check_non_negative("std", std)
    noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype, device=inputs.device)
    return inputs + std * noise


def salt_and_pepper(
    inputs: Tensor,
    fraction: float,
    low: float | None = None,
    high: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Salt and pepper noise (paper 002, figure 2): each element independently becomes ``low``
    with probability ``fraction / 2``, ``high`` with probability ``fraction / 2``, and keeps its
    value otherwise. ``low`` / ``high`` default to ``inputs.min()`` / ``inputs.max()``.

    One uniform draw ``u`` per element decides: ``u < fraction/2`` -> low,
    ``fraction/2 <= u < fraction`` -> high; with one generator state, the elements changed at a
    smaller fraction are a subset of those changed at a larger one.
    """
    _check_inputs(inputs)
    fraction = check_in_range("fraction", fraction, 0.0, 1.0)
    low = float(inputs.min()) if low is None else check_number("low", low)
    high = float(inputs.max()) if high is None else check_number("high", high)
    if low > high:
        raise ValueError(f"low must be <= high, got low={low!r}, high={high!r}")
    u = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype, device=inputs.device)
    noisy = torch.where(u < fraction, torch.full_like(inputs, high), inputs)
    return torch.where(u < 0.5 * fraction, torch.full_like(inputs, low), noisy)


def accuracy(model: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``inputs`` whose largest logit is the target, in evaluation mode, under
    ``torch.no_grad``, ``batch_size`` samples at a time."""
    _check_batch(model, inputs, targets)
    batch_size = check_positive_int("batch_size", batch_size)
    correct = 0
    with torch.no_grad(), _evaluating(model):
        for start in range(0, inputs.shape[0], batch_size):
            logits = _logits(model, inputs[start:start + batch_size])
            correct += int((logits.argmax(1) == targets[start:start + batch_size]).sum())
    return correct / inputs.shape[0]


def noise_curve(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    kind: str,
    levels: Iterable[float],
    seed: int = 0,
) -> list[dict]:
    """Accuracy under noise of each level (paper 002, figure 2): ``kind="white"`` (level = the
    noise's std, :func:`white_noise`) or ``"salt-and-pepper"`` (level = the fraction of elements
    changed, :func:`salt_and_pepper`). Returns ``[{"level": ..., "accuracy": ...}, ...]``.

    Every level starts from the same generator state (``seed``): the curve uses common random
    numbers, so it varies with the level alone and not with a new draw per point.
    """
    kind = check_choice("kind", kind, NOISE_KINDS)
    _check_batch(model, inputs, targets)
    curve = []
    for level in levels:
        generator = torch.Generator(device=inputs.device).manual_seed(seed)
        if kind == "white":
            noisy = white_noise(inputs, level, generator=generator)
        else:
            noisy = salt_and_pepper(inputs, level, generator=generator)
        curve.append({"level": float(level), "accuracy": accuracy(model, noisy, targets)})
    return curve


def pgd_linf(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    epsilon: float,
    step_size: float = 0.01,
    steps: int = PAPER_STEPS,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent on the negative loss in the l_inf ball (Madry et al. 2018,
    section 2.1): ``x^{t+1} = Pi_{x + S}(x^t + step_size * sgn(grad_x L(theta, x^t, y)))`` with
    ``S = {r : ||r||_inf <= epsilon}`` and ``L`` the cross-entropy; the projection (element-wise
    clamping to ``[x - epsilon, x + epsilon]``) follows every step. Paper 002 uses 7 steps of
    0.01. ``random_start``: start from a uniform point of the ball (Madry et al.) instead of
    ``x`` (the fast gradient sign start, Goodfellow et al. 2015).

    Differences from Madry et al.: no clipping to a valid input range (sequences have none in
    general), and one attack, no restarts. Returns the adversarial inputs, detached.
    """
    _check_batch(model, inputs, targets)
    epsilon = check_non_negative("epsilon", epsilon)
    step_size = check_positive("step_size", step_size)
    steps = check_positive_int("steps", steps)
    clean = inputs.detach()
    low, high = clean - epsilon, clean + epsilon
    adversarial = clean.clone()
    if random_start:
        uniform = torch.rand(clean.shape, generator=generator, dtype=clean.dtype,
                             device=clean.device)
        adversarial = torch.clamp(clean + epsilon * (2 * uniform - 1), low, high)
    with _evaluating(model):
        for _ in range(steps):
            adversarial.requires_grad_(True)
            loss = F.cross_entropy(_logits(model, adversarial), targets, reduction="sum")
            (gradient,) = torch.autograd.grad(loss, adversarial)
            adversarial = torch.clamp(adversarial.detach() + step_size * gradient.sign(), low, high)
    return adversarial.detach()


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``(b,)`` values shaped to broadcast over samples ``(b, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _in_ball(clean: Tensor, perturbation: Tensor, epsilon: float, norm: str) -> Tensor:
    """``clean + r'`` with ``r'`` the point of the ``norm`` ball of radius ``epsilon`` nearest to
    each sample's ``perturbation`` (l_inf: element-wise clamping, applied to the points so that
    rounding cannot leave the ball; l_2: radial scaling)."""
    if norm == "linf":
        return torch.clamp(clean + perturbation, clean - epsilon, clean + epsilon)
    lengths = _per_sample_norm(perturbation, "l2")
    scale = (epsilon / lengths.clamp_min(torch.finfo(lengths.dtype).tiny)).clamp(max=1.0)
    return clean + perturbation * _per_sample(scale, perturbation)


def deepfool(
    model: nn.Module,
    inputs: Tensor,
    num_classes: int | None = None,
    norm: str = "l2",
    steps: int = PAPER_STEPS,
    overshoot: float = 0.02,
    candidates: int | None = None,
    epsilon: float | None = None,
) -> Tensor:
    """DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016), multi-class, batched.

    Per sample, with ``k0`` the class the model predicts for the clean input, iteration ``i``
    (Algorithm 2) linearizes the classifier at ``x_i``: for each candidate ``k != k0``,
    ``w'_k = grad f_k(x_i) - grad f_k0(x_i)`` and ``f'_k = f_k(x_i) - f_k0(x_i)``; it picks the
    nearest linearized boundary ``l = argmin_k |f'_k| / ||w'_k||_q`` and steps onto it:

    - ``norm="l2"`` (q = 2, Algorithm 2): ``r_i = |f'_l| / ||w'_l||_2^2 * w'_l``;
    - ``norm="linf"`` (q = 1, the dual norm; section 3.2, eqs. 10 and 11 with p = inf):
      ``r_i = |f'_l| / ||w'_l||_1 * sgn(w'_l)``.

    A sample stops as soon as its predicted label differs from ``k0`` (the loop condition of
    Algorithm 2), or after ``steps`` iterations (paper 002: 7; the authors' code: 50). As in the
    authors' implementation, the point examined is ``x_i = x + (1 + overshoot) r_total`` with
    ``r_total = sum r_i`` (the paper applies the factor ``1 + eta`` once at the end), and
    ``1e-4`` is added to ``|f'_l|`` in each step.

    ``num_classes``: the number of logits, checked against the model (``None``: taken from it).
    ``candidates``: examine only the ``candidates`` classes with the largest clean logits,
    ``k0`` included (the authors' ``num_classes=10``); ``None``: all classes.
    ``epsilon``: not in DeepFool, which looks for the smallest perturbation whatever its size;
    given, every ``(1 + overshoot) r_total`` is projected onto the ``norm`` ball of that radius
    before the label is examined, so the result stays within the ball (a sample that cannot be
    flipped inside it keeps its last projected point).

    Targets are not used: DeepFool moves away from the predicted class. Returns the perturbed
    inputs, detached.
    """
    _check_batch(model, inputs)
    norm = check_choice("norm", norm, NORMS)
    steps = check_positive_int("steps", steps)
    overshoot = check_non_negative("overshoot", overshoot)
    if epsilon is not None:
        epsilon = check_non_negative("epsilon", epsilon)
    clean = inputs.detach()
    with _evaluating(model):
        with torch.no_grad():
            clean_logits = _logits(model, clean)
        classes = clean_logits.shape[1]
        if classes < 2:
            raise ValueError(f"model must return at least 2 logits for DeepFool, got {classes}")
        if num_classes is not None and check_positive_int("num_classes", num_classes) != classes:
            raise ValueError(
                f"num_classes must match the model's {classes} logits, got {num_classes}")
        if candidates is None:
            candidates = classes
        elif (not isinstance(candidates, int) or isinstance(candidates, bool)
              or not 2 <= candidates <= classes):
            raise ValueError(
                f"candidates must be an integer in [2, {classes}] or None, got {candidates!r}")
        # Column 0 is the clean prediction k0, the rest the classes it may be pushed to.
        ranked = clean_logits.topk(candidates, dim=1).indices
        original = ranked[:, 0]
        total = torch.zeros_like(clean)
        adversarial = clean.clone()
        active = torch.ones(clean.shape[0], dtype=torch.bool, device=clean.device)
        for _ in range(steps):
            index = active.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            point = adversarial[index].requires_grad_(True)
            logits = _logits(model, point)
            unflipped = logits.argmax(1) == original[index]
            active[index[~unflipped]] = False
            if not unflipped.any():
                break
            index, rows = index[unflipped], unflipped.nonzero().squeeze(1)
            chosen = logits.gather(1, ranked[index])
            differences = chosen[:, 1:] - chosen[:, :1]  # f'_k, (b, K - 1)
            gradients = torch.stack([  # w'_k, (b, K - 1, ...)
                torch.autograd.grad(differences[:, k].sum(), point, retain_graph=True)[0][rows]
                for k in range(candidates - 1)
            ], dim=1)
            distances = differences.detach().abs()
            dual = gradients.flatten(2).norm(p=2 if norm == "l2" else 1, dim=2)  # ||w'_k||_q
            tiny = torch.finfo(dual.dtype).tiny
            nearest = (distances / dual.clamp_min(tiny)).argmin(dim=1)
            pick = torch.arange(nearest.numel(), device=nearest.device)
            w, length = gradients[pick, nearest], dual[pick, nearest]
            # r_i = size * direction, size = ||r_i||_p; no step where w'_l vanishes.
            size = torch.where(length > 0, (distances[pick, nearest] + DEEPFOOL_MARGIN)
                               / length.clamp_min(tiny), 0.0)
            if norm == "l2":
                direction = w / _per_sample(length.clamp_min(tiny), w)
            else:
                direction = w.sign()
            total[index] += direction * _per_sample(size, w)
            perturbation = (1 + overshoot) * total[index]
            if epsilon is None:
                adversarial[index] = clean[index] + perturbation
            else:
                adversarial[index] = _in_ball(clean[index], perturbation, epsilon, norm)
    return adversarial.detach()


def robust_accuracy(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    attack: str,
    epsilon: float | None = None,
    batch_size: int = 500,
    **options,
) -> dict:
    """Accuracy on adversarial examples (paper 002, table 3), ``batch_size`` samples at a time.

    ``attack``: ``"pgd"`` (:func:`pgd_linf`, ``epsilon`` required), ``"deepfool-l2"`` or
    ``"deepfool-linf"`` (:func:`deepfool`; ``epsilon`` optional, clips the perturbation to the
    ball). ``options`` go to the attack (``steps``, ``step_size``, ``overshoot``, ...).

    PGD attacks every sample with its target. DeepFool attacks only the samples the model
    classifies correctly (it moves away from the predicted class, which could carry a
    misclassified sample onto its true class); the others count as errors, unperturbed.

    Returns ``attack``, ``norm`` (of the perturbation statistics: ``"linf"`` for PGD and
    DeepFool-l_inf, ``"l2"`` for DeepFool-l_2), ``epsilon``, ``steps``, ``samples``, ``attacked``
    (samples the attack ran on), ``clean_accuracy``, ``accuracy`` (after the attack),
    ``fooling_rate`` (fraction of attacked samples whose predicted class changed), and, over the
    attacked samples, ``mean_perturbation`` / ``max_perturbation`` (``||x_adv - x||`` per sample,
    the whole sequence) and ``mean_relative_perturbation`` (``||x_adv - x|| / ||x||``, DeepFool's
    rho_adv, eq. 15); these three are NaN when nothing was attacked.
    """
    attack = check_choice("attack", attack, ATTACKS)
    _check_batch(model, inputs, targets)
    batch_size = check_positive_int("batch_size", batch_size)
    if attack == "pgd":
        if epsilon is None:
            raise ValueError("epsilon must be a finite number >= 0 for attack 'pgd', got None")
        epsilon = check_non_negative("epsilon", epsilon)
        norm = "linf"
    else:
        epsilon = None if epsilon is None else check_non_negative("epsilon", epsilon)
        norm = attack.removeprefix("deepfool-")
    clean_correct = adversarial_correct = fooled = attacked = 0
    lengths, relative = [], []
    for start in range(0, inputs.shape[0], batch_size):
        x, y = inputs[start:start + batch_size].detach(), targets[start:start + batch_size]
        with torch.no_grad(), _evaluating(model):
            predicted = _logits(model, x).argmax(1)
        correct = predicted == y
        if attack == "pgd":
            chosen = torch.ones_like(correct)
            adversarial = pgd_linf(model, x, y, epsilon, **options)
        else:
            chosen = correct
            adversarial = x.clone()
            if chosen.any():
                adversarial[chosen] = deepfool(model, x[chosen], norm=norm, epsilon=epsilon,
                                               **options)
        with torch.no_grad(), _evaluating(model):
            adversarial_predicted = _logits(model, adversarial).argmax(1)
        clean_correct += int(correct.sum())
        adversarial_correct += int((adversarial_predicted == y).sum())
        fooled += int((adversarial_predicted != predicted)[chosen].sum())
        attacked += int(chosen.sum())
        perturbation = (adversarial - x)[chosen]
        lengths.append(_per_sample_norm(perturbation, norm))
        relative.append(lengths[-1] / _per_sample_norm(x[chosen], norm).clamp_min(
            torch.finfo(x.dtype).tiny))
    samples = inputs.shape[0]
    lengths_all, relative_all = torch.cat(lengths), torch.cat(relative)
    nan = float("nan")
    return {
        "attack": attack,
        "norm": norm,
        "epsilon": epsilon,
        "steps": options.get("steps", PAPER_STEPS),
        "samples": samples,
        "attacked": attacked,
        "clean_accuracy": clean_correct / samples,
        "accuracy": adversarial_correct / samples,
        "fooling_rate": fooled / attacked if attacked else nan,
        "mean_perturbation": float(lengths_all.mean()) if attacked else nan,
        "max_perturbation": float(lengths_all.max()) if attacked else nan,
        "mean_relative_perturbation": float(relative_all.mean()) if attacked else nan,
    }
