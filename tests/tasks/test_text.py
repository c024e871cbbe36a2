"""ptb-char / ptb-word from small corpora written here in the Penn Treebank's layout."""

import math

import pytest
import torch

from stablernn.tasks import (
    DataFormatError,
    MissingDataError,
    bits_per_character,
    load_task,
    perplexity,
)

TRAIN = [" the cat sat on the mat ", " the dog ate the <unk> ", " a cat and a dog "] * 20
VALID = [" the cat ate the dog ", " a mat "] * 10
TEST = [" the dog sat on a cat ", " the fish sat "] * 10  # "fish" is not in training


def write_words(directory, prefix="ptb."):
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (directory / f"{prefix}{split}.txt").write_text("\n".join(lines) + "\n")


def write_chars(directory):
    """The ptb.char.* layout: characters separated by spaces, '_' between words."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        text = "\n".join(" ".join("_".join(line.split())) for line in lines) + "\n"
        (directory / f"ptb.char.{split}.txt").write_text(text)


def decode(task, ids):
    vocabulary = task.info["vocabulary"]
    return [vocabulary[i] for i in ids.tolist()]


def test_word_level_vocabulary_sequences_and_next_token_targets(tmp_path):
    write_words(tmp_path)
    task = load_task("ptb-word", data_dir=tmp_path, sequence_length=7)
    assert task.kind == "language-model" and task.per_step
    vocabulary = task.info["vocabulary"]
    assert vocabulary[0] == "the" and "<eos>" in vocabulary and "<unk>" in vocabulary
    assert "fish" not in vocabulary and task.info["unknown_tokens"]["test"] == 10
    assert task.input_size == task.output_size == len(vocabulary) == 11
    x, y = task.train.tensors
    train_tokens = sum(len(line.split()) + 1 for line in TRAIN)
    assert task.info["tokens"]["train"] == train_tokens
    assert x.shape == ((train_tokens - 1) // 7, 7) and x.dtype == torch.long
    assert torch.equal(x.flatten()[1:], y.flatten()[:-1])  # targets: the next token
    assert decode(task, x[0]) == ["the", "cat", "sat", "on", "the", "mat", "<eos>"]
    assert decode(task, y[0])[-1] == "the"
    test_words = decode(task, task.test.tensors[0].flatten())
    assert test_words[:8] == ["the", "dog", "sat", "on", "a", "cat", "<eos>", "the"]
    assert test_words[8] == "<unk>"  # fish
    assert task.sequence_length == 7


def test_default_lengths_and_plain_names(tmp_path):
    write_words(tmp_path / "simple-examples" / "data", prefix="")
    with pytest.raises(DataFormatError, match="fewer than sequence_length"):
        load_task("ptb-word", data_dir=tmp_path)  # 300 words > this small corpus
    task = load_task("ptb-char", data_dir=tmp_path)
    assert task.sequence_length == 150 and task.train.tensors[0].shape[1] == 150


def test_character_level_spaced_files(tmp_path):
    write_words(tmp_path)
    write_chars(tmp_path)
    task = load_task("ptb-char", data_dir=tmp_path, sequence_length=10)
    assert task.info["tokens_mode"] == "spaced"
    assert " " not in task.info["vocabulary"] and "_" in task.info["vocabulary"]
    chars = decode(task, task.train.tensors[0][0])
    assert chars == list("the_cat_sa")
    assert decode(task, task.train.tensors[1][0]) == list("he_cat_sat")
    # f and i (of "fish") never occur in training: they become <unk>
    assert "<unk>" in task.info["vocabulary"] and task.info["unknown_tokens"]["test"] == 20


def test_character_level_raw_text(tmp_path):
    write_words(tmp_path)
    task = load_task("ptb-char", data_dir=tmp_path, sequence_length=12)
    assert task.info["tokens_mode"] == "raw"
    assert " " in task.info["vocabulary"] and "\n" in task.info["vocabulary"]
    assert "".join(decode(task, task.train.tensors[0][0])) == " the cat sat"
    text = "".join(decode(task, task.validation.tensors[0].flatten()))
    assert text.startswith(" the cat ate the dog \n a mat \n")


def test_max_vocabulary(tmp_path):
    write_words(tmp_path)
    task = load_task("ptb-word", data_dir=tmp_path, sequence_length=5, max_vocabulary=5)
    assert len(task.info["vocabulary"]) == 5 and task.info["vocabulary"][-1] == "<unk>"
    assert task.train.tensors[0].max() < 5


def test_metrics_conversions():
    assert bits_per_character(math.log(2)) == pytest.approx(1.0)
    assert bits_per_character(1.0) == pytest.approx(1 / math.log(2))
    assert perplexity(math.log(115.36)) == pytest.approx(115.36)


def test_missing_corpus_says_what_where_and_how(tmp_path):
    write_words(tmp_path)
    (tmp_path / "ptb.valid.txt").unlink()
    with pytest.raises(MissingDataError) as error:
        load_task("ptb-word", data_dir=tmp_path)
    for part in ("ptb.train.txt, ptb.valid.txt, ptb.test.txt", "train.txt, valid.txt",
                 str(tmp_path), "--data-dir", "simple-examples", "never downloads"):
        assert part in str(error.value)


def test_bad_encoding_names_the_file(tmp_path):
    write_words(tmp_path)
    (tmp_path / "ptb.test.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.raises(DataFormatError, match="ptb.test.txt: expected UTF-8"):
        load_task("ptb-word", data_dir=tmp_path, sequence_length=5)
