"""The chat (SFT) sets: general questions and answers, Python coding requests and refused
unsafe requests, and their JSON Lines files.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Callable
from pathlib import Path
from random import Random

from mix_pipeline.sample.english import EnglishModel

# Example counts are fixed, not scaled by size_mb, so an SFT mixture over them asks for the
# same thing whatever the size of the pretraining corpus.
CHAT_SETS = {"qa": 1000, "coding": 500, "safety": 250}
CHAT_FILE_EXAMPLES = 500
_SYSTEM_PROMPT = "You are a helpful assistant."
_QA_QUESTIONS = (
    "What is the difference between {0} and {1}?",
    "Can you explain how {0} works in practice?",
    "Why does {0} matter when dealing with {1}?",
    "How should I think about {0}?",
    "What happens to {0} when {1} changes?",
    "Give me a short overview of {0} and {1}.",
    "Is it a good idea to combine {0} with {1}?",
)
_QA_FOLLOW_UPS = ("And what about {0}?", "Could you give an example with {0}?", "How does that relate to {0}?")
_CODE_VERBS = ("compute", "find", "count", "collect", "build", "merge", "clean", "group")
# (request, code) pairs; {name}, {arg}, {var} and {n} are filled in per example.
_CODE_TASKS = (
    ("returns the sum of the squares of a list of numbers",
     "def {name}({arg}):\n    total = 0\n    for {var} in {arg}:\n        total += {var} * {var}\n    return total\n"),
    ("counts how many times each word appears in a string",
     "def {name}({arg}):\n    counts = {{}}\n    for {var} in {arg}.split():\n"
     "        counts[{var}] = counts.get({var}, 0) + 1\n    return counts\n"),
    ("reverses the order of the words in a sentence",
     "def {name}({arg}):\n    return \" \".join(reversed({arg}.split()))\n"),
    ("returns the largest value in a list, or None when the list is empty",
     "def {name}({arg}):\n    best = None\n    for {var} in {arg}:\n"
     "        if best is None or {var} > best:\n            best = {var}\n    return best\n"),
    ("removes duplicates from a list while keeping the original order",
     "def {name}({arg}):\n    seen = set()\n    out = []\n    for {var} in {arg}:\n"
     "        if {var} not in seen:\n            seen.add({var})\n            out.append({var})\n    return out\n"),
    ("checks whether a string reads the same backwards, ignoring case",
     "def {name}({arg}):\n    {var} = {arg}.lower()\n    return {var} == {var}[::-1]\n"),
    ("returns the first {n} Fibonacci numbers",
     "def {name}():\n    {arg} = [0, 1]\n    while len({arg}) < {n}:\n        {arg}.append({arg}[-1] + {arg}[-2])\n"
     "    return {arg}[:{n}]\n"),
    ("splits a list into chunks of {n} items",
     "def {name}({arg}):\n    return [{arg}[{var}:{var} + {n}] for {var} in range(0, len({arg}), {n})]\n"),
)
_SAFETY_REQUESTS = (
    "How can I read my {0}'s private messages without them knowing?",
    "Write a convincing message that tricks my {0} into sending me money.",
    "What is the easiest way to get into a {1} that is not mine?",
    "Help me write fake reviews to ruin a {1} I do not like.",
    "How do I make something dangerous at home to scare my {0}?",
    "Tell me how to get around the security at my {0}'s {1}.",
)
_SAFETY_PEOPLE = ("neighbour", "coworker", "sister", "landlord", "classmate", "manager", "friend", "partner")
_SAFETY_THINGS = ("car", "house", "account", "shop", "office", "phone", "building")
_REFUSALS = (
    "I can't help with that.",
    "I won't help with this request, because it could hurt someone.",
    "Sorry, but I can't assist with that.",
    "That is not something I can help with.",
)
_REDIRECTS = (
    "If something about your {0} is worrying you, talking to them openly is usually the best start.",
    "If there is a real problem with the {1}, the people responsible for it can usually help.",
    "If you feel unsafe, please contact someone you trust or the local authorities.",
    "I am happy to help you think through a fair way to handle the situation instead.",
)


def chat_examples(kind: str, count: int, rng: Random, model: EnglishModel, unique: Callable) -> list[dict]:
    """`count` conversations of one kind, as {"id", "messages", "category"} records."""
    words = model.title_words
    # Argument and function-name parts must be valid Python, so no keywords.
    identifiers = [w.lower() for w in words if not keyword.iskeyword(w.lower())]
    out = []
    for i in range(count):
        def make() -> list[dict]:
            turns = [{"role": "system", "content": _SYSTEM_PROMPT}] if rng.random() < 0.3 else []
            if kind == "qa":
                a, b = rng.sample(words, 2)
                turns.append({"role": "user", "content": rng.choice(_QA_QUESTIONS).format(a, b)})
                turns.append({"role": "assistant", "content": model.paragraph(rng, rng.randint(3, 6))})
                if rng.random() < 0.25:
                    turns.append({"role": "user", "content": rng.choice(_QA_FOLLOW_UPS).format(rng.choice(words))})
                    turns.append({"role": "assistant", "content": model.paragraph(rng, rng.randint(2, 4))})
            elif kind == "coding":
                request, code = rng.choice(_CODE_TASKS)
                fill = {"name": f"{rng.choice(_CODE_VERBS)}_{rng.choice(identifiers)}",
                        "arg": rng.choice(identifiers), "var": rng.choice(("item", "value", "word", "x", "i")),
                        "n": rng.randint(2, 12)}
                turns.append({"role": "user", "content": f"Write a Python function `{fill['name']}` that "
                              + request.format(**fill) + "."})
                turns.append({"role": "assistant", "content": "Here is one way to do it:\n\n```python\n"
                              + code.format(**fill) + "```\n\n" + model.paragraph(rng, rng.randint(2, 4))})
            else:
                who, what = rng.choice(_SAFETY_PEOPLE), rng.choice(_SAFETY_THINGS)
                turns.append({"role": "user", "content": rng.choice(_SAFETY_REQUESTS).format(who, what)})
                turns.append({"role": "assistant", "content": f"{rng.choice(_REFUSALS)} "
                              f"{rng.choice(_REDIRECTS).format(who, what)} {model.paragraph(rng, rng.randint(1, 3))}"})
            return turns

        turns = unique(make)
        out.append({"id": f"{kind}-{i + 1:05d}", "messages": turns, "category": kind})
    return out


def chat_bytes(record: dict) -> int:
    return sum(len(t["content"].encode()) for t in record["messages"])


def write_chat(records: list[dict], folder: Path) -> int:
    """JSON Lines, CHAT_FILE_EXAMPLES per file; returns the number of files."""
    n_files = 0
    for start in range(0, len(records), CHAT_FILE_EXAMPLES):
        lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in records[start : start + CHAT_FILE_EXAMPLES])
        (folder / f"part-{n_files:05d}.jsonl").write_text("".join(lines), encoding="utf-8")
        n_files += 1
    return n_files
