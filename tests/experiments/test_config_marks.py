"""Every value of a paper config says where it comes from (issue 14, item 4).

Each key of ``configs/paper000`` and ``configs/paper002`` (top level and inside ``[model_options]``
/ ``[task_options]``) carries a comment, at the end of its line or on the line just above it,
that either cites the paper (``paper 002 table 8``, ``paper 000 D.1.1``, ...) or starts with
``not in the paper:`` and gives the reason for the value. tomllib gives the keys; a line scan
finds each key's line and its comment. The values the papers' tables state are checked against
the tables.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from stablernn.experiments import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PAPER_CONFIGS = sorted(path for folder in ("paper000", "paper002")
                       for path in (CONFIG_DIR / folder).glob("*.toml"))
IDS = [f"{path.parent.name}/{path.stem}" for path in PAPER_CONFIGS]

# a citation names the paper and a place in it; an unstated value gives a reason
CITATION = re.compile(r"paper 00\d,? (table|section|appendix|eqs?\.|figure|[A-E]\.\d)")
NOT_STATED = re.compile(r"not in the paper: *\S")
ASSIGNMENT = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+)\s*=')
TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*\]")


def comment_of(line: str) -> str | None:
    """The comment of one TOML line (text after a ``#`` outside strings), or None."""
    quote = None
    index = 0
    while index < len(line):
        char = line[index]
        if quote is None:
            if char == "#":
                return line[index + 1:].strip()
            if char in "\"'":
                quote = char
        elif char == "\\" and quote == '"':
            index += 1  # skip the escaped character
        elif char == quote:
            quote = None
        index += 1
    return None


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line index of every ``key = value`` line, by (table..., key)."""
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for index, line in enumerate(text.splitlines()):
        header = TABLE.match(line)
        if header:
            table = tuple(part.strip() for part in header.group(1).split("."))
            continue
        assignment = ASSIGNMENT.match(line)
        if assignment:
            found[(*table, assignment.group(1).strip('"'))] = index
    return found


def toml_keys(values: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a parsed TOML document: leaves and the keys inside (sub-)tables."""
    keys = []
    for key, value in values.items():
        if isinstance(value, dict):
            keys.extend(toml_keys(value, (*prefix, key)))
        else:
            keys.append((*prefix, key))
    return keys


def is_mark(comment: str | None) -> bool:
    return comment is not None and bool(CITATION.search(comment) or NOT_STATED.search(comment))


def unmarked_keys(text: str) -> list[str]:
    """The keys of a config text without a mark, each with what is wrong."""
    lines = text.splitlines()
    found = key_lines(text)
    problems = []
    for path in toml_keys(tomllib.loads(text)):
        name = ".".join(path)
        index = found.get(path)
        if index is None:
            problems.append(f"{name}: no line of its own (write tables as [table] sections, "
                            "one key per line)")
            continue
        above = lines[index - 1].strip() if index > 0 else ""
        above_comment = above[1:].strip() if above.startswith("#") else None
        if not (is_mark(comment_of(lines[index])) or is_mark(above_comment)):
            problems.append(f"{name} (line {index + 1}): no 'paper 00N <where>' citation or "
                            "'not in the paper: <reason>' on its line or the line above")
    return problems


def test_the_papers_rows_have_configs():
    names = {path.stem for path in PAPER_CONFIGS}
    for task in ("smnist", "psmnist"):  # paper 002 table 1
        for method in ("euler", "rk2"):
            for size in (64, 128):
                assert f"{task}-lipschitz-{method}-n{size}" in names
    for task in ("scifar10", "noise-cifar10"):  # paper 002 table 5
        for method in ("euler", "rk2"):
            for size in (128, 256):
                assert f"{task}-lipschitz-{method}-n{size}" in names
    for name in ("timit-lipschitz-euler-n256", "timit-lipschitz-rk2-n256",  # tables 2, 6, 7
                 "ptb-char-t150-lipschitz", "ptb-char-t300-lipschitz", "ptb-word-lipschitz",
                 # paper 000 table 1, section 4.2.3 and figure 4
                 "smnist-sparse-combo-16x32", "psmnist-sparse-combo-16x32",
                 "psmnist-sparse-combo-16x32-repeat", "scifar10-sparse-combo-16x32",
                 "scifar10-sparse-combo-16x32-repeat", "psmnist-sparse-combo-24x32",
                 "psmnist-sparse-combo-24x32-unconstrained", "psmnist-svd-combo-16x32"):
        assert name in names


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=IDS)
def test_every_key_is_marked(path):
    assert unmarked_keys(path.read_text()) == []


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=IDS)
def test_config_loads_and_resolves(path):
    config = TrainConfig.load(path).resolved()
    assert config.description


def test_a_removed_or_empty_mark_is_caught():
    text = (CONFIG_DIR / "paper002" / "psmnist-lipschitz-euler-n128.toml").read_text()
    lines = text.splitlines()
    found = key_lines(text)
    assert unmarked_keys(text) == []
    for path, index in found.items():  # remove each mark in turn
        stripped = list(lines)
        stripped[index] = stripped[index].split("  #")[0]
        problems = unmarked_keys("\n".join(stripped))
        assert len(problems) == 1 and problems[0].startswith(".".join(path)), problems
    # a mark on the line above counts; a comment that neither cites nor gives a reason does not
    index = found[("model_options", "step_size")]
    value, comment = lines[index].split("  #")
    moved = lines[:index] + [f"#{comment}", value] + lines[index + 1:]
    assert unmarked_keys("\n".join(moved)) == []
    for bad in ("# table 8", "# not in the paper:", "# paper 002", "# our choice"):
        changed = lines[:index] + [f"{value}  {bad}"] + lines[index + 1:]
        assert unmarked_keys("\n".join(changed)) != []
    # a "#" inside a string is not a comment; inline tables cannot carry one mark per key
    assert unmarked_keys('description = "row # 3"\n') != []
    assert unmarked_keys('description = "row # 3"  # paper 002 table 1\n') == []
    inline = 'model_options = {step_size = 0.1}  # paper 002 table 8\n'
    problems = unmarked_keys(inline)
    assert len(problems) == 1 and problems[0].startswith("model_options.step_size: no line")


# paper 002 table 8: (task, N) -> lr, decay (None: "-"), beta, gamma_a, gamma_w, epsilon, sigma.
# sigma is read as the std of the free matrices' entries, init_std / N (see the config headers).
TABLE_8 = {
    ("smnist", 64): (0.003, 0.1, 0.75, 0.001, 0.001, 0.03, 0.1 / 64),
    ("smnist", 128): (0.003, 0.1, 0.75, 0.001, 0.001, 0.03, 0.1 / 128),
    ("psmnist", 64): (0.0035, 0.1, 0.75, 0.001, 0.001, 0.03, 0.1 / 128),
    ("psmnist", 128): (0.0035, 0.1, 0.75, 0.001, 0.001, 0.03, 0.1 / 128),
    ("scifar10", 256): (0.1, 0.2, 0.65, 0.001, 0.001, 0.01, 6 / 256),
    ("noise-cifar10", 256): (0.1, 0.2, 0.75, 0.001, 0.001, 0.01, 6 / 256),
    ("timit", 256): (0.001, None, 0.8, 0.8, 0.001, 0.9, 12 / 256),
    ("ptb-char", 750): (0.005, None, 0.8, 0.5, 0.001, 0.1, 12 / 256),
    ("ptb-word", 160): (0.1, None, 0.8, 0.9, 0.001, 0.01, 10 / 256),
}
# appendix C: epochs and decay epochs per task; Adam except RMSprop at word level
APPENDIX_C = {"smnist": (100, [90]), "psmnist": (100, [90]), "scifar10": (100, [90]),
              "noise-cifar10": (100, [90]), "timit": (1200, []), "ptb-char": (200, []),
              "ptb-word": (500, [])}
PAPER002 = [path for path in PAPER_CONFIGS if path.parent.name == "paper002"]


@pytest.mark.parametrize("path", PAPER002, ids=[path.stem for path in PAPER002])
def test_paper002_configs_hold_table_8_and_appendix_c(path):
    config = TrainConfig.load(path)
    options = config.model_options
    epochs, decay_epochs = APPENDIX_C[config.task]
    assert (config.epochs, config.lr_decay_epochs) == (epochs, decay_epochs)
    assert config.optimizer == ("rmsprop" if config.task == "ptb-word" else "adam")
    assert config.grad_clip is None or config.task == "timit"  # "no gradient clipping"
    assert options["parametrization"] == "paper" and options["method"] in ("euler", "rk2")
    # table 8 has no N = 128 CIFAR-10 row: those files reuse the N = 256 row (and mark it)
    row = TABLE_8.get((config.task, config.hidden_size)) or TABLE_8[(config.task, 256)]
    lr, decay, beta, gamma_a, gamma_w, step, sigma = row
    assert config.learning_rate == lr
    assert config.lr_decay_factor == (1.0 if decay is None else decay)
    assert options["beta_a"] == options["beta_w"] == beta
    assert (options["gamma_a"], options["gamma_w"], options["step_size"]) == (
        gamma_a, gamma_w, step)
    assert options["init_std"] / config.hidden_size == pytest.approx(sigma, rel=1e-12)


PAPER000 = [path for path in PAPER_CONFIGS if path.parent.name == "paper000"]


@pytest.mark.parametrize("path", PAPER000, ids=[path.stem for path in PAPER000])
def test_paper000_configs_hold_d11(path):
    config = TrainConfig.load(path)
    repeat = path.stem.endswith("-repeat")
    assert (config.optimizer, config.learning_rate, config.weight_decay) == ("adam", 1e-3, 1e-5)
    assert config.epochs == (200 if repeat else 150)
    assert config.lr_decay_epochs == ([140, 190] if repeat else [90, 140])
    assert config.lr_decay_factor == 0.1
    options = config.model_options
    assert options["activation"] == "relu"
    assert config.hidden_size == 32 * options["num_subnetworks"]
    if config.model == "sparse-combo":
        assert options["density"] == 0.033
        assert options["mask"] == ("full" if options.get("unconstrained") else "lower")
