"""The claims of paper 000 (RNNs of RNNs), section 4.2 and appendix D.2: modules (figure 4,
Sparse and SVD Combo Nets), modularity (figure S1B), sparsity (figures 5, S2A), magnitude
(figure S2B), the feedback control of section 4.2.3 and the sparse-feedback pilot (D.2.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stablernn.experiments.config import TrainConfig
from stablernn.experiments.reproduction.report import Section, sweep_figure, table
from stablernn.experiments.reproduction.runner import Runner
from stablernn.experiments.reproduction.scales import combo_density, combo_magnitude
from stablernn.experiments.reproduction.statistics import compare, fmt, spread


def _combo_config(runner: Runner, subnetworks: int, units: int, seed: int,
                  density: float | None = None, model: str = "sparse-combo",
                  **options: Any) -> TrainConfig:
    scale = runner.scale
    if model == "sparse-combo":
        options["density"] = combo_density(units) if density is None else density
    return runner.config(
        model, scale.combo_task, scale.combo_task_options, subnetworks * units, seed, scale.combo,
        model_options={"num_subnetworks": subnetworks, **options})


def _accuracies(figures: list[dict]) -> list[float]:
    return [f["accuracy"] for f in figures]


def _diverged(figures: dict[Any, list[dict]]) -> dict[Any, int]:
    return {value: sum(f["diverged"] for f in runs_) for value, runs_ in figures.items()}


def claim_modules(runner: Runner, figures: Path) -> Section:
    section = Section(
        "modules", "Number of modules (paper 000, section 4.2.1, figure 4)",
        "\"The greatest performance jump happened when increasing from one module (37.1% Sparse "
        "Combo Net, 61.8% SVD Combo Net) to two modules (89.1% Sparse Combo Net, 92.9% SVD Combo "
        "Net). After that the performance increased steadily with number of modules until "
        "saturating at ~97% for Sparse Combo Net and ~95% for SVD Combo Net ... Sparse Combo Net "
        "surpassed SVD Combo Net by the 12 x 32 network size\" (permuted seqMNIST, 32-unit "
        "subnetworks).")
    counts = runner.scale.module_counts
    seeds = runner.test_seeds()
    sparse = runner.sweep("modules", counts, lambda k, seed: _combo_config(runner, k, 32, seed),
                          lambda k: f"{k}x32", seeds)
    svd_counts = sorted({counts[0], counts[1], counts[-1]})
    svd = runner.sweep("modules-svd", svd_counts,
                       lambda k, seed: _combo_config(runner, k, 32, seed, model="svd-combo"),
                       lambda k: f"svd-{k}x32", seeds)
    curves = {"sparse-combo": {k: spread(_accuracies(v)) for k, v in sparse.items()},
              "svd-combo": {k: spread(_accuracies(v)) for k, v in svd.items()}}
    section.table = table(["subnetworks x 32 units", "Sparse Combo Net", "SVD Combo Net"],
                          [[k, fmt(curves["sparse-combo"][k], percent=True),
                            fmt(curves["svd-combo"][k], percent=True) if k in svd else "-"]
                           for k in counts])
    one, two, most = counts[0], counts[1], counts[-1]
    for name, runs_ in (("Sparse", sparse), ("SVD", svd)):
        section.check(f"{name}: {two} modules > {one} module",
                      compare(_accuracies(runs_[two]), _accuracies(runs_[one])))
        section.check(f"{name}: {most} modules > {two} modules (keeps improving)",
                      compare(_accuracies(runs_[most]), _accuracies(runs_[two])))
    section.check(f"{one} module: SVD > Sparse (trained subnetworks help the smallest nets)",
                  compare(_accuracies(svd[one]), _accuracies(sparse[one])))
    section.check(f"{most} modules: Sparse > SVD (Sparse surpasses SVD as nets grow)",
                  compare(_accuracies(sparse[most]), _accuracies(svd[most])))
    section.plots.append(sweep_figure("modules", "32-unit subnetworks", "number of subnetworks",
                                      curves, figures))
    section.notes.append("Sparse subnetworks: density 3.3% at 32 units (the paper's best). SVD "
                         "Combo Net at the smallest, second and largest sizes only (budget).")
    section.data = {model: {str(k): v for k, v in stats.items()} for model, stats in
                    curves.items()}
    return section


def claim_modularity(runner: Runner, figures: Path) -> Section:
    shapes = runner.scale.modularity
    total = shapes[0][0] * shapes[0][1]
    section = Section(
        "modularity", "Modularity at a fixed number of units (paper 000, D.2.1, figure S1B)",
        "\"We observed an inverse U shape, with poor performance of a 1 x 352 net and an 88 x 4 "
        "net, and best performance from a 44 x 8 net.\"")

    def make(shape, seed):
        return _combo_config(runner, *shape, seed)

    def label(shape):
        return f"{shape[0]}x{shape[1]}"

    best, scores = runner.pick_best("modularity", list(shapes[1:-1]), make, label)
    arms = [shapes[0], best, shapes[-1]]
    tested = runner.sweep("modularity", arms, make, label, runner.test_seeds())
    stats = {shape: spread(_accuracies(tested[shape])) for shape in arms}
    section.table = table(
        ["subnetworks x units", "density", "selection: validation accuracy",
         "test accuracy (test seeds)"],
        [[f"{k} x {n}", f"{combo_density(n):.3g}",
          f"{scores[(k, n)]:.3f}" if (k, n) in scores else "-",
          fmt(stats[(k, n)], percent=True) if (k, n) in stats else "-"] for k, n in shapes])
    for end in (shapes[0], shapes[-1]):
        section.check(f"inverse U: {label(best)} (best intermediate on selection seeds) > "
                      f"{label(end)}", compare(_accuracies(tested[best]),
                                               _accuracies(tested[end])))
    section.plots.append(sweep_figure("modularity", f"Sparse Combo Net, {total} units",
                                      "subnetworks x units", {"sparse-combo": stats}, figures))
    section.notes.append(
        "Density is set to 1.06 expected connections per unit (3.3% at 32 units) so that every "
        "subnetwork size can meet Theorem 1; the paper held the density level similar.")
    section.data = {label(shape): value for shape, value in stats.items()}
    return section


def claim_sparsity(runner: Runner, figures: Path) -> Section:
    subnetworks, units = runner.scale.combo_shape
    densities = runner.scale.densities
    section = Section(
        "sparsity", "Subnetwork sparsity (paper 000, section 4.2.2, figures 5 and S2A)",
        "\"We observed a large (> 5 percentage point) performance boost when switching from a "
        "26.5% sparsity level to a 10% sparsity level ... A 3.3% sparsity level produced the "
        "best results\" (the paper's 'sparsity level' is the density of nonzero weights).")
    tested, skipped = {}, []
    for density in densities:
        try:
            tested.update(runner.sweep(
                "sparsity", [density],
                lambda d, seed: _combo_config(runner, subnetworks, units, seed, d,
                                              magnitude=combo_magnitude(d)),
                lambda d: f"density{d:g}", runner.test_seeds()))
        except ValueError as error:  # Theorem 1 cannot hold at this density and magnitude
            skipped.append(density)
            section.notes.append(f"density {density:g}: no subnetwork met Theorem 1 ({error})")
    densities = [d for d in densities if d not in skipped]
    stats = {d: spread(_accuracies(tested[d])) for d in densities}
    section.table = table([f"density ({subnetworks} x {units})", "entry magnitude",
                           "test accuracy"], [[f"{d:g}", f"{combo_magnitude(d):.2g}",
                                               fmt(stats[d], percent=True)] for d in densities])
    section.notes.append("Entry magnitude min(1, 0.033 / density): with magnitude 1, denser "
                         "subnetworks cannot meet Theorem 1; the paper's magnitudes for its "
                         "denser settings are not in the available text.")
    if 0.1 in tested and 0.265 in tested:
        section.check("10% > 26.5%", compare(_accuracies(tested[0.1]),
                                              _accuracies(tested[0.265])))
        section.check("the gain from 26.5% to 10% exceeds 5 points (Welch test of the gain "
                      "minus 5 points)", compare([a - 0.05 for a in _accuracies(tested[0.1])],
                                                 _accuracies(tested[0.265])))
    if 0.033 in tested:
        for other in [d for d in densities if d != 0.033]:
            section.check(f"3.3% > {other:g} (3.3% is best)",
                          compare(_accuracies(tested[0.033]), _accuracies(tested[other])))
    section.plots.append(sweep_figure("sparsity", f"Sparse Combo Net {subnetworks}x{units}",
                                      "density", {"sparse-combo": stats}, figures, log_x=True))
    section.data = {str(d): v for d, v in stats.items()}
    return section


def claim_magnitude(runner: Runner, figures: Path) -> Section:
    subnetworks, units = runner.scale.combo_shape
    magnitudes = sorted(runner.scale.magnitudes)
    section = Section(
        "magnitude", "Entry magnitude at fixed sparsity (paper 000, section 4.2.2, figure S2B)",
        "\"We found that decreasing the magnitude of non-zero elements while holding sparsity "
        "level constant decreased task performance (Figure S2B)\".")
    tested = runner.sweep(
        "magnitude", magnitudes,
        lambda m, seed: _combo_config(runner, subnetworks, units, seed, 0.033, magnitude=m),
        lambda m: f"magnitude{m:g}", runner.test_seeds())
    stats = {m: spread(_accuracies(tested[m])) for m in magnitudes}
    section.table = table([f"entry magnitude ({subnetworks} x {units}, density 3.3%)",
                           "test accuracy"], [[f"{m:g}", fmt(stats[m], percent=True)]
                                              for m in magnitudes])
    for smaller, larger in zip(magnitudes, magnitudes[1:]):
        section.check(f"magnitude {larger:g} > {smaller:g}",
                      compare(_accuracies(tested[larger]), _accuracies(tested[smaller])))
    section.plots.append(sweep_figure("magnitude", f"Sparse Combo Net {subnetworks}x{units}",
                                      "entry magnitude", {"sparse-combo": stats}, figures))
    section.data = {str(m): v for m, v in stats.items()}
    return section


FEEDBACK_ARMS = {
    "constrained": ("constrained, L = B - M^-1 B^T M (eq. 3)", {}),
    "unconstrained-full": ("unconstrained, L = B, full B (the paper's control)",
                           {"unconstrained": True, "mask": "full"}),
    "cascade": ("unconstrained, L = B, lower-triangular B (a hierarchical cascade: contracting "
                "by paper 000's hierarchy result)", {"unconstrained": True, "mask": "lower"}),
}


def claim_feedback(runner: Runner, figures: Path) -> Section:
    subnetworks, units = runner.scale.combo_shape
    section = Section(
        "feedback", "Constrained against unconstrained feedback (paper 000, section 4.2.3)",
        "\"[With] L = B and B not constrained at all during training, thus no longer ensuring "
        "contraction of the overall system ... 47.0% test accuracy on the permuted seqMNIST "
        "task, a stark decrease from the original 96.7%\" (24 x 32 network).")
    tested = runner.sweep(
        "feedback", list(FEEDBACK_ARMS),
        lambda arm, seed: _combo_config(runner, subnetworks, units, seed,
                                        **FEEDBACK_ARMS[arm][1]),
        lambda arm: arm, runner.test_seeds())
    stats = {arm: spread(_accuracies(tested[arm])) for arm in FEEDBACK_ARMS}
    diverged = _diverged(tested)
    section.table = table(
        [f"feedback ({subnetworks} x {units})", "test accuracy", "runs diverged"],
        [[FEEDBACK_ARMS[arm][0], fmt(stats[arm], percent=True),
          f"{diverged[arm]} of {len(tested[arm])}"] for arm in FEEDBACK_ARMS])
    constrained, control = _accuracies(tested["constrained"]), \
        _accuracies(tested["unconstrained-full"])
    section.check("constrained > unconstrained (full B)", compare(constrained, control))
    section.check("the unconstrained network collapses: constrained - unconstrained > 20 points "
                  "(the paper's gap is 49.7; Welch test of the gap minus 20 points)",
                  compare([a - 0.2 for a in constrained], control))
    section.notes.append(
        "A run whose loss diverges (NaN) is an outcome of its setting, not a crash: it counts at "
        "chance accuracy (10%) and is listed in the last column. The lower-triangular arm is not "
        "the paper's control: with L = B lower block-triangular the network is a hierarchy of "
        "contracting parts, itself contracting.")
    section.data = {arm: {**stats[arm], "diverged": diverged[arm]} for arm in FEEDBACK_ARMS}
    return section


def claim_feedback_sparsity(runner: Runner, figures: Path) -> Section:
    subnetworks, units = runner.scale.combo_shape
    densities = sorted(runner.scale.feedback_densities)
    section = Section(
        "feedback-sparsity", "Sparse feedback (paper 000, section 4.2.2 and D.2.4, table S1)",
        "\"enforcing sparsity in the linear feedback weight matrix (L). We performed pilot "
        "testing of this idea, which showed promise in mitigating the saturation effect seen in "
        "Figure 4.\" (the text of D.2.4 and table S1 is not in the available copy of the paper)")

    def make(density, seed):
        # density 1 is the default network (no option), so the feedback claim's runs count
        options = {} if density == 1.0 else {"feedback_density": density}
        return _combo_config(runner, subnetworks, units, seed, **options)

    def label(density):
        return "constrained" if density == 1.0 else f"feedback-density{density:g}"

    sparse = [d for d in densities if d < 1.0]
    best, scores = runner.pick_best("feedback", sparse, make, label)
    tested = runner.sweep("feedback", [best, 1.0], make, label, runner.test_seeds())
    stats = {d: spread(_accuracies(tested[d])) for d in (best, 1.0)}
    section.table = table(
        [f"fraction of B trained ({subnetworks} x {units}, lower blocks)",
         "selection: validation accuracy", "test accuracy (test seeds)"],
        [[f"{d:g}", f"{scores[d]:.3f}" if d in scores else "-",
          fmt(stats[d], percent=True) if d in stats else "-"] for d in densities])
    section.check(f"sparse feedback ({best:g} of B, best on selection seeds) > dense feedback",
                  compare(_accuracies(tested[best]), _accuracies(tested[1.0])))
    section.notes.append(
        "The claim is about larger networks, where dense feedback saturates (figure 4); here it is "
        f"tested at {subnetworks} x {units}. A fixed random pattern of B's lower blocks is "
        "trained; L = B - M^-1 B^T M stays skew in the metric, so every arm is certified.")
    section.data = {str(d): v for d, v in stats.items()}
    return section


CLAIMS = {"modules": claim_modules, "modularity": claim_modularity, "sparsity": claim_sparsity,
          "magnitude": claim_magnitude, "feedback": claim_feedback,
          "feedback-sparsity": claim_feedback_sparsity}
