"""The ``stablernn`` command line: thin verbs over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable

from stablernn.experiments.config import DEVICES, TrainConfig
from stablernn.models.registry import MODELS
from stablernn.tasks.registry import TASKS


def _option_value(text: str) -> Any:
    """``--option key=value`` values are read as JSON where they parse (numbers, true, lists)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE (e.g. beta_a=0.8), got {pair!r}")
        options[key] = _option_value(value)
    return options


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML or JSON file with TrainConfig fields (e.g. "
                                         "configs/paper002/smnist.toml); flags override it")
    parser.add_argument("--model", choices=sorted(MODELS))
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--hidden-size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", dest="learning_rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help=f"one of {', '.join(DEVICES)} or cuda:N")
    parser.add_argument("--step-size", type=float, help="the model's step (epsilon, dt)")
    parser.add_argument("--method", choices=("euler", "rk2", "exponential", "splitting"),
                        help="the discretization: euler, rk2; exponential (Lipschitz RNN) and "
                             "splitting (combo nets) are the certified defaults")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other model option, e.g. --option beta_a=0.8 (repeatable)")
    parser.add_argument("--max-train-samples", type=int, help="use only the first N training samples")
    parser.add_argument("--max-eval-samples", type=int, help="use only the first N val/test samples")
    parser.add_argument("--data-dir", help="where the task's data files are (tasks that need files)")
    parser.add_argument("--run-dir", help="where to write the run (default runs/<time>-<model>-<task>)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run exactly (no option may change it; "
                             "--data-dir may say where its data is now)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing run directory (its old files are removed)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, data and output location, print the model, its "
                             "parameter count and certificate at initialisation; train nothing")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar or per-epoch lines (the bar shows on terminals "
                             "only; logs get one line per epoch)")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    model_options = _parse_options(args.option)
    if args.step_size is not None:
        model_options["step_size"] = args.step_size
    if args.method is not None:
        model_options["method"] = args.method
    overrides = {name: getattr(args, name) for name in TRAIN_OVERRIDES}
    if args.model is not None and args.model != config.model:
        # options written for another model do not carry over
        config = dataclasses.replace(config, model=args.model, model_options={})
    if args.data_dir is not None:
        overrides["task_options"] = {**config.task_options, "data_dir": args.data_dir}
    return config.with_overrides(**overrides, model_options=model_options or None)


TRAIN_OVERRIDES = ("model", "task", "hidden_size", "epochs", "batch_size", "learning_rate",
                   "seed", "device", "max_train_samples", "max_eval_samples")


def _train(args: argparse.Namespace) -> int:
    from stablernn.experiments.training import dry_run, resume, train

    if args.resume:
        changed = [f"--{name.replace('_', '-')}" for name in (*TRAIN_OVERRIDES, "config",
                   "step_size", "method", "run_dir") if getattr(args, name) is not None]
        changed += [flag for flag, given in (("--option", args.option), ("--force", args.force),
                                             ("--dry-run", args.dry_run)) if given]
        if changed:
            raise ValueError(f"--resume {args.resume} continues the run with its own config; "
                             f"remove {', '.join(changed)} (to change the run, start a new one)")
        resume(args.resume, progress=not args.quiet, data_dir=args.data_dir)
        return 0
    config = _train_config(args)
    if args.dry_run:
        dry_run(config, run_dir=args.run_dir, force=args.force)
        return 0
    train(config, run_dir=args.run_dir, progress=not args.quiet, force=args.force)
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--data-dir", help="where the task's data files are now (default: "
                                           "STABLERNN_DATA_DIR, else where the run found them)")


def _eval(args: argparse.Namespace) -> int:
    from stablernn.experiments.evaluation import evaluate_run

    result = evaluate_run(args.run_dir, checkpoint=args.checkpoint, split=args.split,
                          data_dir=args.data_dir)
    print(json.dumps(result, indent=2))
    return 0


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML or JSON config (default: the main job)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds, 0..N-1 (default 1)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a config key and its values, e.g. model_options.density=0.01,0.033")
    parser.add_argument("--grid-file", help="a sweep definition (TOML: config and [grid]), e.g. "
                                            "configs/ablations/lipschitz-alpha-smnist.toml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config key of every trial, e.g. learning_rate=0.01 or "
                             "model_options.step_size=0.1 (values read as JSON; repeatable)")
    parser.add_argument("--epochs", type=int, help="epochs of every trial")
    parser.add_argument("--data-dir",
                        help="where the task's data files are (task_options.data_dir)")
    parser.add_argument("--sweep-dir", required=True, help="where the trials and summary go")
    parser.add_argument("--force", action="store_true",
                        help="train again trial directories that hold a run of another config, "
                             "and reuse a sweep directory of another sweep (finished trials of "
                             "the same config are always kept)")
    parser.add_argument("--address", help="an existing Ray cluster (default: start a local Ray)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stablernn.experiments.output import check_writable_directory
    from stablernn.experiments.sweeps import (
        apply_setting,
        load_sweep_file,
        parse_grid,
        parse_overrides,
        run_sweep,
    )

    check_writable_directory(args.sweep_dir, "--sweep-dir")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    config, grid = load_sweep_file(args.grid_file) if args.grid_file else (TrainConfig(), {})
    if args.config:
        config = TrainConfig.load(args.config)
    overrides = parse_overrides(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data_dir is not None:
        overrides["task_options.data_dir"] = str(Path(args.data_dir).expanduser().absolute())
    if overrides:
        config = apply_setting(config, overrides, source="--set key")
    grid.update(parse_grid(args.grid))
    run_sweep(config, args.sweep_dir, list(range(args.seeds)), grid,
              address=args.address, cpus_per_trial=args.cpus_per_trial,
              gpus_per_trial=args.gpus_per_trial, force=args.force)
    return 0


def _certify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH",
                        help="a run directory or a checkpoint file (its directory must be "
                             "writable: checked before certifying)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which checkpoint of a run directory (default best)")
    parser.add_argument("--no-plots", action="store_true",
                        help="do not write PNG plots (skipped with a note without matplotlib)")


def _certify(args: argparse.Namespace) -> int:
    from stablernn.experiments.certificates import certify_run

    certificate, _, written = certify_run(args.path, args.checkpoint, plots=not args.no_plots)
    print(certificate)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0 if certificate.contracting_as_run else 1


def _analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--samples", type=int, default=500, help="test samples (500)")
    parser.add_argument("--hessian-samples", type=int, default=500,
                        help="training samples of the Hessian's loss (500)")
    parser.add_argument("--top-k", type=int, default=1, help="top Hessian eigenvalues (1)")
    parser.add_argument("--trace-samples", type=int, default=50, help="Hutchinson vectors (50)")
    parser.add_argument("--pgd-epsilon", type=float, default=0.05, help="PGD l_inf radius (0.05)")
    parser.add_argument("--attack-steps", type=int, default=7, help="attack iterations (7)")
    parser.add_argument("--no-hessian", action="store_true")
    parser.add_argument("--no-attacks", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--data-dir", help="where the task's data files are now (default: "
                                           "STABLERNN_DATA_DIR, else where the run found them)")


def _analyze(args: argparse.Namespace) -> int:
    from stablernn.experiments.analyze import AnalysisSettings, analyze_run

    settings = AnalysisSettings(
        samples=args.samples, hessian_samples=args.hessian_samples, hessian_top_k=args.top_k,
        trace_samples=args.trace_samples, pgd_epsilon=args.pgd_epsilon,
        attack_steps=args.attack_steps, hessian=not args.no_hessian, attacks=not args.no_attacks)
    result = analyze_run(args.run_dir, args.checkpoint, settings, plots=not args.no_plots,
                         data_dir=args.data_dir)
    summary = {key: result[key] for key in ("clean_accuracy", "hessian", "attacks") if key in result}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.run_dir}/analysis.json")
    return 0


def _reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    from stablernn.experiments.reproduce import CLAIMS, SCALES

    parser.add_argument("--out", default="reproduction",
                        help="directory for the runs and the report (default ./reproduction); "
                             "checked for writing before any training")
    parser.add_argument("--scale", choices=list(SCALES), default="reduced",
                        help="quick (tests, under a minute), reduced (default, a few CPU "
                             "hours; the report says how long it took), full (the papers' "
                             "setups, GPU)")
    parser.add_argument("--quick", action="store_const", const="quick", dest="scale",
                        help="same as --scale quick")
    parser.add_argument("--claims", help=f"comma-separated subset of: {', '.join(CLAIMS)}")
    parser.add_argument("--report", help="where report.md goes (default OUT/report.md); "
                                          "figures go beside it (skipped with a note without "
                                          "matplotlib)")
    parser.add_argument("--data-dir", help="MNIST IDX files, for --scale full")


def _reproduce(args: argparse.Namespace) -> int:
    from stablernn.experiments.reproduce import reproduce

    claims = [name.strip() for name in args.claims.split(",")] if args.claims else None
    command = "stablernn " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else \
        "stablernn reproduce"
    report = reproduce(args.out, args.scale, claims, args.report, args.data_dir, command)
    print(f"wrote {report}")
    return 0


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    from stablernn.experiments.benchmark import add_arguments

    add_arguments(parser)


def _bench(args: argparse.Namespace) -> int:
    from stablernn.experiments.benchmark import run_benchmark

    return run_benchmark(args)


@dataclasses.dataclass(frozen=True)
class Verb:
    """One verb of the command line: its help line, description, arguments and handler."""

    help: str
    description: str | None
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


VERBS = {
    "train": Verb(
        "train a model (default: Lipschitz RNN on sequential digits)",
        "Train a model and write a run directory (config, metrics, checkpoints).",
        _train_arguments, _train),
    "eval": Verb(
        "evaluate a run's best model on its test set",
        None,
        _eval_arguments, _eval),
    "sweep": Verb(
        "repeats and grids of runs on Ray Tune (extra 'sweep')",
        "Run a config over seeds and a grid of settings on Ray Tune; each trial is "
        "an ordinary run directory; writes trials.csv (each trial with its status) "
        "and summary.md (mean (n) [min]). A failed trial is listed as failed while "
        "the others are summarised (exit 2). Rerunning the same command keeps "
        "finished trials, resumes interrupted ones and retries failed ones.",
        _sweep_arguments, _sweep),
    "certify": Verb(
        "certificate of contraction of a trained model",
        "Print the contraction certificate of a run's model (or a checkpoint file) "
        "and write certificate.json beside it. Exit status 0 when the model is "
        "certified as it runs (its own step and method contract in the metric), 1 "
        "when not, 2 on error.",
        _certify_arguments, _certify),
    "analyze": Verb(
        "Hessian, noise and adversarial robustness of a trained classifier",
        "Paper 002 section 7 on a run's model: top Hessian eigenvalue, trace and "
        "condition number; accuracy under white and salt-and-pepper noise; PGD and "
        "DeepFool. Writes analysis.json and analysis_noise.png into RUN_DIR.",
        _analyze_arguments, _analyze),
    "reproduce": Verb(
        "rerun the papers' claims and write report.md",
        "Train and analyse what each claim needs (Hessian, noise, attacks, the "
        "alpha and beta ablations, modules, modularity, sparsity, feedback, sparse feedback), then "
        "write a report with the paper's statement, the measured table and plot, "
        "and whether the direction agrees. Rerunning continues where it stopped.",
        _reproduce_arguments, _reproduce),
    "bench": Verb(
        "side-by-side speed benchmark of the recurrence engine",
        "Time a training step and a forward pass of the Lipschitz RNN and the Sparse and "
        "SVD Combo Nets with each of their methods: GEMM peak and FLOP bound, torch.nn.LSTM, "
        "the plain eager loop of the same equations and stablernn's engine, side by side in "
        "one process; warns instead of publishing when the machine is busy (needs a source "
        "checkout).",
        _bench_arguments, _bench),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stablernn", description="Provably stable recurrent neural networks.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of its one-line message")
    for name, verb in VERBS.items():
        verb.arguments(subparsers.add_parser(name, parents=[common], help=verb.help,
                                             description=verb.description))
    return parser


def _error_message(error: BaseException) -> str:
    """The message of an expected failure; file-system errors name their file first."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        target = error.filename if error.filename2 is None else \
            f"{error.filename} -> {error.filename2}"
        return f"{target}: {error.strerror}"
    notes = getattr(error, "__notes__", [])
    return "\n".join([str(error) or type(error).__name__, *notes])


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Expected failures (bad arguments or config values, missing, unreadable or
    unwritable files, non-finite training) exit 2 with a message whose first line names the
    culprit; Ctrl-C exits 130; ``--debug`` shows the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return VERBS[args.command].run(args)
    except KeyboardInterrupt as interrupt:
        if args.debug:
            raise
        print(f"stablernn {args.command}: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130
    except (ValueError, ImportError, FloatingPointError, OSError) as error:
        if args.debug:
            raise
        print(f"stablernn {args.command}: error: {_error_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
