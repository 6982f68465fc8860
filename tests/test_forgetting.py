"""The general-text set for forgetting: built-in text, a user's file, clear errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lorarank.errors import UserError
from lorarank.forgetting import builtin_text, general_loss, load_general_text, windows


def test_windows_are_evenly_spread_and_never_overlap():
    ids = list(range(100))
    assert windows(ids, 3, 10) == [ids[0:10], ids[33:43], ids[66:76]]
    assert windows(ids, 50, 30) == [ids[0:30], ids[33:63], ids[66:96]]  # only 3 fit
    assert windows(ids[:9], 3, 10) == []


def test_base_general_loss_is_finite_and_deterministic(tiny_base):
    model, tok = tiny_base
    text = load_general_text(tok, n_windows=8, max_tokens=64)
    again = load_general_text(tok, n_windows=8, max_tokens=64)
    desc = text.describe()
    assert desc["n_windows"] == 8 and desc["tokens_per_window"] == 64 and desc["target_tokens"] == 8 * 63
    assert desc["source"].startswith("pydoc_data.topics (Python ") and desc["fingerprint"] == again.fingerprint
    assert len(builtin_text()) > 400_000  # the Python language reference: plenty of windows
    cpu = torch.device("cpu")
    loss = general_loss(model, text, 4, tok.pad_token_id, cpu)
    # an untrained byte-level model is close to uniform over its 261 tokens: about ln 261 = 5.56 nats
    assert math.isfinite(loss) and 4.5 < loss < 6.5
    assert general_loss(model, again, 4, tok.pad_token_id, cpu) == loss
    assert general_loss(model, text, 3, tok.pad_token_id, cpu, packed=False) == pytest.approx(loss, rel=1e-4)


def test_user_files(tmp_path, tiny_base):
    _, tok = tiny_base
    words = "The quick brown fox jumps over the lazy dog. " * 20  # 900 characters = 900 byte tokens
    (tmp_path / "a.txt").write_text(words)
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": words[:450]}) for _ in range(2)))
    (tmp_path / "a.json").write_text(json.dumps([{"text": words}]))
    for name in ("a.txt", "a.jsonl", "a.json"):
        text = load_general_text(tok, tmp_path / name, n_windows=32, max_tokens=128)
        assert text.source.endswith(name) and len(text.examples) == 7  # 900 // 128 windows fit


@pytest.mark.parametrize("name,content,message", [
    ("missing.txt", None, "cannot be read"),
    ("notes.csv", "a,b", "unknown type .csv"),
    ("bad.jsonl", "{not json", "not valid JSON"),
    ("bad.json", json.dumps([{"body": "x"}]), "\"text\" field"),
    ("short.txt", "too short", "fewer than one window"),
])
def test_bad_general_text_file_is_a_one_line_user_error(tmp_path, tiny_base, name, content, message):
    _, tok = tiny_base
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_general_text(tok, tmp_path / name)
    assert "\n" not in str(err.value)
