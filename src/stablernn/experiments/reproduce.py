"""``stablernn reproduce``: rerun the papers' claims beyond accuracy and write ``report.md``.

Claims (:data:`CLAIMS`), each a section of the report with the paper's statement, the measured
table and plot, and checks decided by the rule of
:mod:`stablernn.experiments.reproduction.statistics` (Welch t-tests over >= 5 seeds per arm):

- paper 002 section 7 (table 3, figure 2): ``hessian``, ``noise``, ``adversarial``; section 7.1
  (figure 3): ``alpha``, ``beta``; table 4: ``seeds``;
- paper 000 section 4.2 and D.2: ``modules`` (Sparse and SVD Combo Nets), ``modularity``,
  ``sparsity``, ``magnitude``, ``feedback`` (eq. 3 against the unconstrained ``L = B``);
- ``headline``: the papers' headline accuracies, their configs and their cost here.

Scales (:data:`SCALES`): ``quick`` (seconds, for the tests), ``reduced`` (the default) and
``full`` (the papers' tasks and settings, for a GPU, with MNIST files in ``--data-dir``). Every
run is an ordinary run directory under ``OUT/runs``, reused only when the same code made it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stablernn.experiments.output import (
    check_writable_directory,
    check_writable_file,
    write_text_atomic,
)
from stablernn.experiments.provenance import provenance
from stablernn.experiments.reproduction import paper000, paper002
from stablernn.experiments.reproduction.headline import headline_numbers
from stablernn.experiments.reproduction.report import Section, draw_figures, write_report
from stablernn.experiments.reproduction.runner import Runner
from stablernn.experiments.reproduction.scales import SCALES, Scale
from stablernn.experiments.reproduction.statistics import overall

CLAIMS: dict[str, Callable[[Runner, Path], Section]] = {
    **paper002.CLAIMS, **paper000.CLAIMS, "headline": headline_numbers}


def reproduce(out: str | Path, scale: str = "reduced", claims: Sequence[str] | None = None,
              report: str | Path | None = None, data_dir: str | None = None,
              command: str = "stablernn reproduce", log: Callable[[str], None] = print) -> Path:
    """Run the claims at a scale and write the report (default ``OUT/report.md``); figures go
    in ``<report name>-figures/`` beside it. Returns the report's path."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    claims = list(CLAIMS) if claims is None else list(claims)
    unknown = [name for name in claims if name not in CLAIMS]
    if unknown or not claims:
        raise ValueError(f"unknown claim(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
                         f"choose from {', '.join(CLAIMS)}")
    out = check_writable_directory(out, "--out")  # before any training
    if report is None:
        report = check_writable_file(out / "report.md", "--out")
    else:
        report = check_writable_file(report, "--report")
    out.mkdir(parents=True, exist_ok=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    figures = report.parent / f"{report.stem}-figures"
    runner = Runner(out, SCALES[scale], data_dir, log)
    started = time.perf_counter()
    sections = []
    for name in claims:
        log(f"claim {name}")
        try:
            section = CLAIMS[name](runner, figures)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted in claim {name}; finished runs are kept in {out / 'runs'}: run the "
                "same command again to continue") from None
        if not section.tested:
            section.verdict = "informs (no verdict)"
        elif scale == "quick":
            section.verdict = "not tested (quick mode)"
        else:
            section.verdict = overall([result for _, result in section.checks])
        sections.append(section)
    # the results first (claims.json, then the report with tables only), the figures last:
    # a missing matplotlib or a failing plot loses nothing that was computed
    code = provenance()
    write_text_atomic(out / "claims.json", json.dumps(
        {"provenance": code, "scale": scale,
         "claims": {s.claim: {"verdict": s.verdict, "checks": s.checks, "data": s.data}
                    for s in sections}}, indent=2, default=str) + "\n")
    training, analysis = runner.compute_seconds()
    compute = (training, analysis, runner.used_runs())
    write_report(sections, report, SCALES[scale], command, figures.name,
                 time.perf_counter() - started, compute, code)
    if not any(section.plots for section in sections):
        return report
    note = draw_figures(sections, figures, log)
    return write_report(sections, report, SCALES[scale], command, figures.name,
                        time.perf_counter() - started, compute, code, note)


__all__ = ["CLAIMS", "SCALES", "Scale", "Section", "reproduce"]
