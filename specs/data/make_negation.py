"""Writes negation.npz, the data of specs/lstm-classifier.yaml: `python specs/data/make_negation.py`.

Short "reviews" over a 50-word vocabulary, of 4 to 24 words, padded with 0 at the end: words 2-11 are
positive, 12-21 negative, 22-49 neutral, and word 1 ("not") flips the polarity of the sentiment word that
follows it. The label is 1 when the flipped polarities sum above zero (ties are left out). Word order
matters, so a bag of words cannot solve it; a recurrent model can. Fields: tokens (uint8, read as int64),
mask (bool, true for real words), label (int64).
"""
from pathlib import Path

import numpy as np

EXAMPLES, LENGTH, VOCAB, NOT = 4000, 24, 50, 1


def polarity(word: int) -> int:
    return 1 if 2 <= word < 12 else -1 if 12 <= word < 22 else 0


def review(rng: np.random.Generator) -> tuple[list[int], int] | None:
    words = []
    for _ in range(rng.integers(4, LENGTH + 1)):
        words.append(NOT if rng.random() < 0.15 else int(rng.integers(2, VOCAB)))
    score, flip = 0, 1
    for word in words:
        if word == NOT:
            flip = -1
        elif polarity(word):
            score += flip * polarity(word)
            flip = 1
    return (words, int(score > 0)) if score else None


def main() -> None:
    rng = np.random.default_rng(0)
    tokens = np.zeros((EXAMPLES, LENGTH), np.uint8)
    mask = np.zeros((EXAMPLES, LENGTH), bool)
    label = np.zeros(EXAMPLES, np.int64)
    n = 0
    while n < EXAMPLES:
        made = review(rng)
        if made:
            words, label[n] = made
            tokens[n, : len(words)] = words
            mask[n, : len(words)] = True
            n += 1
    np.savez_compressed(Path(__file__).with_name("negation.npz"), tokens=tokens, mask=mask, label=label)


if __name__ == "__main__":
    main()
