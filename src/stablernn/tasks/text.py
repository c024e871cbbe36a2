"""Character- and word-level language modelling (``ptb-char``, ``ptb-word``) from text files.

Files: any plain-text (UTF-8) corpus in Penn Treebank's layout, three files in ``data_dir``
(or ``data_dir/simple-examples/data``, the folder of Mikolov's archive that ships PTB):

- ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (or ``train.txt``, ``valid.txt``,
  ``test.txt``): one sentence per line, words separated by spaces;
- for ``ptb-char`` also ``ptb.char.train.txt``, ``ptb.char.valid.txt``, ``ptb.char.test.txt``
  (preferred when present): one character per token, separated by spaces, ``_`` between words.

Tokens (paper 002 appendix B.3, after Kerg et al. 2019 and Kusupati et al. 2018):

- word level: the words of each line, then ``<eos>``, as the Penn Treebank is always read (the
  PTB files already replace rare words by ``<unk>``);
- character level, ``char_tokens="spaced"`` (files whose tokens are all single characters, such
  as ``ptb.char.*``): the tokens of each line, then ``<eos>``; ``"raw"`` (any other text): every
  character of the file, spaces and newlines included. ``"auto"`` (default) picks ``spaced``
  when every whitespace-separated token of the training file is one character.

The vocabulary is the training file's tokens, most frequent first (ties in code-point order),
cut to ``max_vocabulary`` if given. Validation or test tokens outside it become ``<unk>``,
which is added to the vocabulary only when needed. Each split's token stream is cut into
non-overlapping sequences of ``sequence_length`` tokens (default 150 for characters, 300 for
words, as paper 002 tables 6 and 7; 300 for characters is the second setting of table 6); the
target of each step is the next token, so every token but the first of a split is predicted
exactly once and the last ``< sequence_length`` tokens are dropped.

Two protocols, chosen by the task option ``carry_state``:

- ``carry_state=False`` (default): sequences are independent samples (the state starts afresh
  in each, zeros), shuffled in training, as the training loop treats every task.
- ``carry_state=True``: the standard character/word-level protocol (truncated backpropagation
  through time, as in the nnRNN release that paper 002 follows and PyTorch's
  word_language_model example). Each split's token stream is cut into ``B`` parallel streams
  of ``len(stream) // B`` consecutive tokens (the remainder dropped); windows of
  ``sequence_length`` steps are read in order along the streams (the last window may be
  shorter), the hidden state carried from one window to the next and detached at each window
  boundary; the state starts at zero at the start of every pass. ``B`` is the training
  ``batch_size`` in training and ``eval_streams`` (default 10, the nnRNN release's
  ``eval_batch_size``) for validation and test. The splits are then :class:`TokenStream` datasets;
  the training loop and :func:`stablernn.experiments.evaluate` carry the state when a split is
  one (one process only; not under DistributedDataParallel). :func:`get_batch` on a
  TokenStream still returns the non-overlapping windows of the default protocol (window ``k``
  is ``stream[k T:(k+1) T]``), so code that does not carry state sees the same samples.

``kind="language-model"``: inputs are token ids ``(N, T)`` (long), not float features; the
vocabulary is in ``task.info["vocabulary"]``. Report the mean cross-entropy in nats per token
as :func:`bits_per_character` (character level) or :func:`perplexity` (word level).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from stablernn._checks import check_bool, check_int
from stablernn.tasks.base import Batch, BatchDataset, SequenceTask
from stablernn.tasks.files import DataFormatError, MissingDataError, resolve_data_dir

EOS, UNK = "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")
WORD_FILES = (("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
              ("train.txt", "valid.txt", "test.txt"))
CHAR_FILES = (("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt"), *WORD_FILES)
CHAR_TOKENS = ("auto", "spaced", "raw")
HELP = (
    "A text corpus is expected as three plain-text UTF-8 files, ptb.train.txt, ptb.valid.txt "
    "and ptb.test.txt (or train.txt, valid.txt, test.txt; for ptb-char also "
    "ptb.char.train.txt, ptb.char.valid.txt, ptb.char.test.txt), one sentence per line, in "
    "DIR or DIR/simple-examples/data (pass DIR with --data-dir). stablernn never downloads; "
    "the Penn Treebank files come in Tomas Mikolov's simple-examples.tgz (its data/ folder, "
    "from his RNNLM page) and in many language-modelling repositories; copy them here."
)


def bits_per_character(cross_entropy_nats: float) -> float:
    """Mean cross-entropy in nats per character -> bits per character (divide by ln 2)."""
    return float(cross_entropy_nats) / math.log(2.0)


def perplexity(cross_entropy_nats: float) -> float:
    """Mean cross-entropy in nats per token -> perplexity (its exponential)."""
    return math.exp(float(cross_entropy_nats))


def find_corpus(data_dir, task: str, file_sets) -> dict[str, Path]:
    """The three files of the first complete set found (directories outer, sets inner)."""
    root = resolve_data_dir(data_dir, task, HELP)
    directories = [root, root / "simple-examples" / "data"]
    for directory in directories:
        for names in file_sets:
            paths = [directory / name for name in names]
            if all(path.is_file() for path in paths):
                return dict(zip(SPLITS, paths))
    wanted = " or ".join(", ".join(names) for names in file_sets)
    raise MissingDataError(f"task {task!r}: no complete set of corpus files ({wanted}) in "
                           f"{', '.join(str(d) for d in directories)}. {HELP}")


def read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: expected UTF-8 plain text ({error})") from None
    if not text.strip():
        raise DataFormatError(f"{path}: expected a text corpus, the file is empty")
    return text


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def tokenize(text: str, mode: str) -> list[str]:
    """``"words"`` or ``"spaced"``: each line's tokens then ``<eos>``; ``"raw"``: characters."""
    if mode == "raw":
        return list(text)
    tokens: list[str] = []
    for line in _lines(text):
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def build_vocabulary(tokens: list[str], max_vocabulary: int | None = None) -> list[str]:
    """Tokens by decreasing count (ties in code-point order), at most ``max_vocabulary``."""
    counts = Counter(tokens)
    vocabulary = sorted(counts, key=lambda token: (-counts[token], token))
    if max_vocabulary is not None and len(vocabulary) > max_vocabulary:
        kept = vocabulary[:max_vocabulary]
        if UNK not in kept:  # the rarer tokens become <unk>, which takes the last place
            kept = vocabulary[:max_vocabulary - 1] + [UNK]
        vocabulary = kept
    return vocabulary


def sequences(ids: torch.Tensor, length: int, source: Path) -> TensorDataset:
    """Non-overlapping windows: inputs ``ids[k T:(k+1) T]``, targets shifted by one token."""
    count = (len(ids) - 1) // length
    if count < 1:
        raise DataFormatError(f"{source}: {len(ids)} tokens, fewer than sequence_length + 1 = "
                              f"{length + 1} needed for one sequence; use a shorter "
                              "sequence_length")
    inputs = ids[:count * length].reshape(count, length)
    targets = ids[1:count * length + 1].reshape(count, length)
    return TensorDataset(inputs.clone(), targets.clone())


class TokenStream(BatchDataset):
    """A split's token ids ``(n,)`` read as consecutive windows with the state carried.

    ``len()`` and :meth:`batch` give the non-overlapping windows of ``length`` tokens of the
    default protocol (:func:`sequences`); :meth:`windows` gives the carried-state protocol's
    batches (module docstring). ``streams`` is the number of parallel streams evaluation
    uses (``None``: the batch size the caller gives).
    """

    carries_state = True

    def __init__(self, ids: torch.Tensor, length: int, streams: int | None = None):
        self.ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        self.length, self.streams = int(length), streams

    def __len__(self) -> int:
        return max((len(self.ids) - 1) // self.length, 0)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        starts = torch.as_tensor(indices, dtype=torch.long).reshape(-1, 1) * self.length
        positions = starts + torch.arange(self.length)
        return Batch(self.ids[positions], self.ids[positions + 1], None)

    def subset(self, indices: torch.Tensor) -> TokenStream:
        """The first ``count`` windows (``take``): only a prefix ``0 .. count - 1`` keeps the
        stream consecutive."""
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if not torch.equal(indices, torch.arange(len(indices))):
            raise ValueError("a TokenStream (carry_state) keeps only a prefix of its windows "
                             "(indices 0, 1, ..., count - 1): its tokens must stay consecutive")
        return TokenStream(self.ids[:len(indices) * self.length + 1], self.length, self.streams)

    def stream_matrix(self, streams: int) -> torch.Tensor:
        """``(streams, len // streams)``: row ``b`` is tokens ``b L .. (b + 1) L - 1``."""
        streams = check_int("task option streams", streams)
        columns = len(self.ids) // streams
        if columns < 2:
            raise ValueError(f"{len(self.ids)} tokens cannot make {streams} parallel streams of "
                             "at least 2 tokens; use fewer streams (batch_size / eval_streams)")
        return self.ids[:streams * columns].reshape(streams, columns)

    def window_count(self, streams: int) -> int:
        """How many batches :meth:`windows` yields."""
        return math.ceil((self.stream_matrix(streams).shape[1] - 1) / self.length)

    def windows(self, streams: int) -> Iterator[Batch]:
        """``(streams, <= length)`` batches in stream order: inputs ``M[:, s:e]``, targets
        ``M[:, s + 1:e + 1]`` for ``s = 0, length, 2 length, ...`` and ``e = min(s + length,
        L - 1)``, with ``M`` the :meth:`stream_matrix`."""
        matrix = self.stream_matrix(streams)
        last = matrix.shape[1] - 1
        for start in range(0, last, self.length):
            end = min(start + self.length, last)
            yield Batch(matrix[:, start:end], matrix[:, start + 1:end + 1], None)


def language_model_task(data_dir: str | os.PathLike | None = None, level: str = "char",
                        sequence_length: int | None = None, char_tokens: str = "auto",
                        max_vocabulary: int | None = None, carry_state: bool = False,
                        eval_streams: int = 10) -> SequenceTask:
    """Next-token prediction at character (``level="char"``) or word level (module docstring)."""
    if level not in ("char", "word"):
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")
    check_bool("task option carry_state", carry_state)
    eval_streams = check_int("task option eval_streams", eval_streams)
    name = f"ptb-{level}"
    if sequence_length is None:
        sequence_length = 150 if level == "char" else 300
    sequence_length = check_int("task option sequence_length", sequence_length)
    if char_tokens not in CHAR_TOKENS:
        raise ValueError(f"task option char_tokens must be one of {', '.join(CHAR_TOKENS)}, "
                         f"got {char_tokens!r}")
    if max_vocabulary is not None:
        max_vocabulary = check_int("task option max_vocabulary", max_vocabulary, 2)
    paths = find_corpus(data_dir, name, CHAR_FILES if level == "char" else WORD_FILES)
    texts = {split: read_text(path) for split, path in paths.items()}
    if level == "word":
        mode = "words"
    elif char_tokens == "auto":
        mode = "spaced" if all(len(t) == 1 for t in texts["train"].split()) else "raw"
    else:
        mode = char_tokens
    tokens = {split: tokenize(text, mode) for split, text in texts.items()}
    vocabulary = build_vocabulary(tokens["train"], max_vocabulary)
    index = {token: i for i, token in enumerate(vocabulary)}
    unknown = {split: sum(token not in index for token in stream)
               for split, stream in tokens.items()}
    if any(unknown.values()) and UNK not in index:
        index[UNK] = len(vocabulary)
        vocabulary.append(UNK)
    unk = index.get(UNK, -1)
    datasets = {}
    for split, stream in tokens.items():
        ids = torch.tensor([index.get(token, unk) for token in stream], dtype=torch.long)
        datasets[split] = sequences(ids, sequence_length, paths[split])  # checks the length
        if carry_state:
            datasets[split] = TokenStream(ids, sequence_length,
                                          None if split == "train" else eval_streams)
    unit = "character" if level == "char" else "word"
    return SequenceTask(
        name=name, train=datasets["train"], validation=datasets["valid"], test=datasets["test"],
        input_size=len(vocabulary), output_size=len(vocabulary),
        sequence_length=sequence_length, kind="language-model",
        description=(f"{unit}-level language model on {paths['train'].parent} "
                     f"({paths['train'].name}, ...; {len(vocabulary)} {unit} vocabulary, "
                     f"{mode} tokens), next token of {sequence_length}-token sequences"
                     + (f", state carried across windows of parallel streams ({eval_streams} "
                        "in evaluation)" if carry_state else "")),
        info={"unit": unit, "level": level, "tokens_mode": mode, "vocabulary": vocabulary,
              "carry_state": carry_state,
              "tokens": {split: len(stream) for split, stream in tokens.items()},
              "unknown_tokens": unknown, "files": {s: str(p) for s, p in paths.items()},
              "metric": "bits_per_character" if level == "char" else "perplexity"},
    )
