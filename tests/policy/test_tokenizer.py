"""The C tokenizer (src/policy/tokenizer.cc over the Debian libsentencepiece, 0.1.97) vs the
Python sentencepiece package and openpi's PaligemmaTokenizer.tokenize (policy_ref), token for
token, on a Gemma-like BPE model trained here, over >= 1000 prompts: unicode, digits,
punctuation, emoji, Python-whitespace edges, '_' and '\\n', empty, and over-long ones."""
import random

import numpy as np
import sentencepiece as spm

import policy_ref
import safetensors_np as st
from conftest import run

SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680", "\u2000", "\u200a",
          "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u200b"]  # the last is not a Python space
PIECES = ["pick", "up", "the", "red", "cube", "Transfer", "fold_the_towel", "open the drawer", "12", "3.5", "-7",
          "2024", "!", "?", "...", ",", "(x)", "[y]", "{z}", "\"q\"", "'s", "café", "naïve", "Größe", "東京",
          "ロボット", "机器人", "😀", "🤖🦾", "→", "—", "½", "é", "e\u0301", "Ω", "zqxj", "ẞ", "\x01", "\x7f",
          "a_b_c", "__init__", "line1\nline2", "tab\there", "  double  space  ", "UPPER lower", "ǅ", "ﬁ", "①"]


def prompts(seed):
    rng = random.Random(seed)
    out = ["", " ", "\n", "_", "__", " \n\t ", "\u3000", "\xa0x\xa0", "\u200bzero width\u200b", "Transfer cube",
           "fold the towel", "open the tupperware and put the food on the plate", "uncap the pen",
           "pick up the red cube\n", "\n\nprompt\n\n", "_leading and trailing_", " 東京 ", "😀" * 60,
           "word " * 60, "x" * 300, "1234567890" * 10]
    while len(out) < 1200:
        k = rng.randint(0, 12)
        parts = []
        for _ in range(k):
            parts.append(rng.choice(PIECES))
            parts.append(rng.choice(SPACES) if rng.random() < 0.3 else " ")
        s = "".join(parts)
        if rng.random() < 0.3:
            s = rng.choice(SPACES) + s + rng.choice(SPACES)
        if rng.random() < 0.05:
            s = s * rng.randint(5, 20)  # over-long
        if rng.random() < 0.1:
            s = "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(rng.randint(1, 30)))
        out.append(s)
    return out


def test_tokenizer_matches_python_sentencepiece(tool, spm_model, tmp_path, base_seed):
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    ps = prompts(base_seed)
    data = [p.encode("utf-8") for p in ps]
    offsets = np.cumsum([0] + [len(b) for b in data]).astype(np.int64)
    text = np.frombuffer(b"".join(data), np.uint8) if any(data) else np.zeros(0, np.uint8)
    st.save(str(tmp_path / "in.safetensors"), {"text": text, "offsets": offsets})
    run(tool, "tokenize", spm_model, tmp_path / "in.safetensors", tmp_path / "out.safetensors", 48)
    got, meta = st.load(str(tmp_path / "out.safetensors"))
    assert int(meta["bos_id"]) == sp.bos_id() == 2 and int(meta["vocab_size"]) == sp.vocab_size()
    raw_ok = tok_ok = truncated = 0
    bad = []
    for i, p in enumerate(ps):
        raw = got["raw"][got["raw_offsets"][i]:got["raw_offsets"][i + 1]].tolist()
        raw_ok += raw == sp.encode(p)
        tokens, mask, n = policy_ref.tokenize(sp, p, 48)
        ok = (np.array_equal(got["tokens"][i], tokens) and np.array_equal(got["mask"][i], mask)
              and int(got["n_ids"][i]) == n)
        tok_ok += ok
        truncated += n > 48
        if not ok or raw != sp.encode(p):
            bad.append((p, raw, sp.encode(p)))
    print(f"\n[tokenizer parity] {len(ps)} prompts ({truncated} over 48 tokens): openpi tokenize "
          f"{tok_ok}/{len(ps)} equal, plain encode {raw_ok}/{len(ps)} equal "
          f"(C libsentencepiece vs Python sentencepiece {spm.__version__})")
    assert not bad, f"{len(bad)} disagreements, first: {bad[:3]}"
    assert len(ps) >= 1000 and truncated > 0
