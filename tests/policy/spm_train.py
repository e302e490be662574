"""Train a small Gemma-like SentencePiece model with sentencepiece's own trainer.

Gemma / PaliGemma conventions (SPEC §9.4, §10.3): pad = 0, eos = 1, bos = 2, unk = 3, BPE with
byte fallback, identity normalization, no dummy-prefix space, whitespace kept as U+2581.
CLI: python3 tests/policy/spm_train.py OUT_DIR [VOCAB]  -> OUT_DIR/spm.model
"""
import os
import random
import sys

WORDS = ("pick up the red cube and place it in the bowl fold towel open drawer close lid "
         "transfer cube uncap pen tupperware food plate robot arm gripper left right wrist camera "
         "move slowly quickly grasp release push pull rotate stack blocks 0 1 2 3 4 5 6 7 8 9 "
         "Put Take Open Close The A An").split()
EXTRA = ["café", "naïve", "Größe", "東京", "ロボット", "机器人", "😀", "→", "—", "½", "ß", "ñ", "Ω", "é"]


def corpus_lines(n=4000, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        k = rng.randint(1, 14)
        words = [rng.choice(WORDS) if rng.random() > 0.08 else rng.choice(EXTRA) for _ in range(k)]
        line = " ".join(words)
        if rng.random() < 0.3:
            line += rng.choice([".", "!", "?", ",", ";", ":"])
        yield line


def train(out_dir, vocab_size=600, seed=0):
    import sentencepiece as spm
    os.makedirs(out_dir, exist_ok=True)
    text = os.path.join(out_dir, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        for line in corpus_lines(seed=seed):
            f.write(line + "\n")
    prefix = os.path.join(out_dir, "spm")
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, user_defined_symbols=["\n"],
        allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2)
    return prefix + ".model"


if __name__ == "__main__":
    print(train(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 600))
