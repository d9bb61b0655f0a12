"""The two small eval sets, and planting one of their items in a document (contamination)."""

from __future__ import annotations

import re
from random import Random

from mix_pipeline.sample.english import EnglishModel

# Eval sets for decontamination. Markov text reuses long stretches of its training sentences, so
# two independent samples often share a 13-gram; swapping every 4th word of an eval item for a
# random vocabulary word makes a chance 13-gram match with the corpus vanishingly
# unlikely, so only the planted copies are contaminated.
EVAL_SETS = {"qa": 40, "reading": 20}  # name → items
EVAL_SWAP_EVERY = 4
EVAL_MIN_WORDS = 26  # two 13-grams at least, so a partial copy is still caught


_TRAILING_PUNCT = re.compile(r"[.,;:!?]*$")


def _eval_text(model: EnglishModel, rng: Random, n_sentences: int) -> str:
    while True:
        words = " ".join(model.sentence(rng) for _ in range(n_sentences)).split()
        if len(words) >= EVAL_MIN_WORDS:
            break
    for k in range(rng.randrange(EVAL_SWAP_EVERY), len(words), EVAL_SWAP_EVERY):
        new = rng.choice(model.vocab)
        if words[k][0].isupper():
            new = new.capitalize()
        words[k] = new + _TRAILING_PUNCT.search(words[k]).group(0)
    return " ".join(words)


def eval_sets(model: EnglishModel, rng: Random) -> dict[str, list[dict]]:
    """A question-answer set and a reading set, as JSON-lines records with a `text` field."""
    out: dict[str, list[dict]] = {}
    qa = []
    for i in range(EVAL_SETS["qa"]):
        question = _eval_text(model, rng, 2)
        question = question.rstrip(".!?") + "?"
        answer = _eval_text(model, rng, 1)
        qa.append({"id": f"qa-{i + 1:04d}", "question": question, "answer": answer, "text": f"{question} {answer}"})
    out["qa"] = qa
    reading = []
    for i in range(EVAL_SETS["reading"]):
        passage = _eval_text(model, rng, rng.randint(3, 5))
        question = _eval_text(model, rng, 1).rstrip(".!?") + "?"
        reading.append({"id": f"reading-{i + 1:04d}", "passage": passage, "question": question, "text": passage})
    out["reading"] = reading
    return out


def plant_eval_item(text: str, item_text: str, rng: Random, first_line: int) -> str:
    """Insert an eval item as its own line somewhere after `first_line` (titles stay first)."""
    lines = text.split("\n")
    lines.insert(rng.randint(min(first_line, len(lines)), len(lines)), item_text)
    return "\n".join(lines)
