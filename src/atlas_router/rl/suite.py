"""The built-in RL task suite: a small synthetic records table where each task family has one best pair.

It exists so that ``atlas train-rl --preset cpu-replay`` trains and measures a policy with no live model
and no download (640 queries, 192 of them held out). The table is synthetic but honest about what it encodes — the usual strengths of the
pairs of ``resources/rl/suite_pool.yaml``, with cost from token counts and the pool's prices:

- arithmetic ("What is 37 * 48?"): any calculator or python-code pair is right; the cheapest is
  small-lm@@calculator. Models alone get large products wrong.
- capitals ("What is the capital of Peru?"): small-lm@@web-search (large-lm alone also knows, at 8x).
- letter counting ("How many times does the letter 'r' appear in 'strawberry'?"): only
  large-lm@@python-code (the small model writes buggy code; models alone miscount).
- word problems ("Ana has 12 apples, buys 7 more and gives away 5..."): large-lm@@none (large-lm with
  a tool is also right but dearer; the small model is wrong).

Queries are split at random into train and test (held out: never seen in training, same families).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd

from atlas_router.config import PoolConfig, load_pool_config
from atlas_router.records.schema import SCHEMA_VERSION, query_key
from atlas_router.rl.replay import Task

SUITE_BENCHMARK = "atlas-rl-suite"
SUITE_POOL_PATH = Path(__file__).resolve().parents[1] / "resources" / "rl" / "suite_pool.yaml"

_CAPITALS = [
    ("France", "Paris"), ("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"),
    ("Egypt", "Cairo"), ("Chile", "Santiago"), ("Norway", "Oslo"), ("Spain", "Madrid"), ("Italy", "Rome"),
    ("Greece", "Athens"), ("Cuba", "Havana"), ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("Portugal", "Lisbon"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Hungary", "Budapest"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Argentina", "Buenos Aires"), ("Colombia", "Bogota"), ("Mexico", "Mexico City"), ("Germany", "Berlin"),
    ("Belgium", "Brussels"), ("Ghana", "Accra"), ("Nigeria", "Abuja"), ("Ethiopia", "Addis Ababa"),
    ("Morocco", "Rabat"), ("Turkey", "Ankara"), ("Australia", "Canberra"), ("Brazil", "Brasilia"),
    ("Venezuela", "Caracas"), ("Uruguay", "Montevideo"), ("Nepal", "Kathmandu"), ("Mongolia", "Ulaanbaatar"),
    ("Indonesia", "Jakarta"), ("Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"), ("Senegal", "Dakar"),
    ("Romania", "Bucharest"), ("Bolivia", "Sucre"), ("Ecuador", "Quito"), ("Paraguay", "Asuncion"),
    ("Panama", "Panama City"), ("Jamaica", "Kingston"), ("Iceland", "Reykjavik"), ("Latvia", "Riga"),
    ("Estonia", "Tallinn"), ("Lithuania", "Vilnius"), ("Ukraine", "Kyiv"), ("Serbia", "Belgrade"),
    ("Croatia", "Zagreb"), ("Bulgaria", "Sofia"), ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"),
    ("Albania", "Tirana"), ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"), ("Kazakhstan", "Astana"),
    ("Pakistan", "Islamabad"), ("Bangladesh", "Dhaka"), ("Sri Lanka", "Colombo"), ("Cambodia", "Phnom Penh"),
    ("Laos", "Vientiane"), ("Myanmar", "Naypyidaw"), ("South Korea", "Seoul"),
    ("New Zealand", "Wellington"), ("Fiji", "Suva"), ("Tanzania", "Dodoma"), ("Uganda", "Kampala"),
    ("Rwanda", "Kigali"), ("Zambia", "Lusaka"), ("Angola", "Luanda"), ("Tunisia", "Tunis"), ("Algeria", "Algiers"),
    ("Libya", "Tripoli"), ("Sudan", "Khartoum"), ("Jordan", "Amman"), ("Lebanon", "Beirut"), ("Syria", "Damascus"),
    ("Qatar", "Doha"), ("Oman", "Muscat"), ("Yemen", "Sanaa"), ("Afghanistan", "Kabul"),
]
_WORDS = [
    "strawberry", "banana", "mississippi", "committee", "parallel", "bookkeeper", "balloon", "coffee",
    "assessment", "engineering", "letter", "pepper", "success", "address", "possession", "accommodate",
    "millennium", "embarrass", "occurrence", "tomorrow", "necessary", "referee", "giraffe", "umbrella",
    "cinnamon", "broccoli", "vacuum", "tennessee", "barrel", "cappuccino", "hippopotamus", "kayak",
    "rhythm", "parameter", "programming", "terrace", "attitude", "puzzle", "raccoon", "sassafras",
]
_NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena",
          "Mateo", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Victor", "Wen", "Yusuf"]
_ITEMS = ["apples", "books", "stamps", "marbles", "coins", "cards"]

# (tokens in, tokens out) per tool: tool loops and retrieved passages cost prompt tokens.
_TOKENS = {"none": (70, 40), "calculator": (150, 60), "web-search": (400, 50), "python-code": (200, 120)}
_MODELS = ("small-lm", "large-lm")
_TOOLS = ("none", "calculator", "web-search", "python-code")


def suite_pool() -> PoolConfig:
    return load_pool_config(SUITE_POOL_PATH)


def _arith(rng: random.Random, lo: int, hi: int) -> tuple[str, str, set[tuple[str, str]]]:
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if rng.random() < 0.5:
        q, ans = f"What is {a} * {b}?", a * b
    else:
        c = rng.randint(2, 9)
        q, ans = f"What is {a} + {b} * {c}?", a + b * c
    right = {(m, t) for m in _MODELS for t in ("calculator", "python-code")}
    return q, str(ans), right


def _capital(rng: random.Random, country: str, city: str) -> tuple[str, str, set[tuple[str, str]]]:
    right = {("small-lm", "web-search"), ("large-lm", "web-search"), ("large-lm", "none")}
    template = rng.choice(["What is the capital of {}?", "Which city is the capital of {}?",
                           "Name the capital city of {}.", "What city is the seat of government of {}?"])
    return template.format(country), city, right


def _letters(rng: random.Random, word: str) -> tuple[str, str, set[tuple[str, str]]]:
    letter = rng.choice(sorted(set(word)))
    q = f"How many times does the letter '{letter}' appear in '{word}'?"
    return q, str(word.count(letter)), {("large-lm", "python-code")}


def _word_problem(rng: random.Random, name: str, item: str, lo: int, hi: int) -> tuple[str, str, set[tuple[str, str]]]:
    a, b = rng.randint(lo, hi), rng.randint(2, 20)
    c = rng.randint(1, a + b - 1)
    q = f"{name} has {a} {item}, buys {b} more and then gives away {c}. How many {item} does {name} have now?"
    right = {("large-lm", "none"), ("large-lm", "calculator"), ("large-lm", "python-code")}
    return q, str(a + b - c), right


def _wrong(rng: random.Random, answer: str, family: str) -> str:
    if family == "capital":
        others = [c for _, c in _CAPITALS if c != answer]
        return rng.choice(others)
    value = int(answer)
    delta = rng.choice([-1, 1]) * rng.randint(1, max(2, abs(value) // 7 + 1))
    return str(value + delta)


def _questions(rng: random.Random, count: int) -> list[tuple[str, str, str, set[tuple[str, str]]]]:
    """``count`` distinct questions per family as (family, question, answer, right pairs)."""
    out: list[tuple[str, str, str, set[tuple[str, str]]]] = []
    seen: set[str] = set()
    makers = {
        "arithmetic": lambda: _arith(rng, 11, 99),
        "capital": lambda: _capital(rng, *rng.choice(_CAPITALS)),
        "letters": lambda: _letters(rng, rng.choice(_WORDS)),
        "word_problem": lambda: _word_problem(rng, rng.choice(_NAMES), rng.choice(_ITEMS), 3, 60),
    }
    for family, make in makers.items():
        made, tries = 0, 0
        while made < count and tries < count * 50:
            tries += 1
            question, answer, right = make()
            if question not in seen:
                seen.add(question)
                out.append((family, question, answer, right))
                made += 1
    return out


def suite_records(per_family: int = 160, test_fraction: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """The suite's records: every (query, model, tool) with answer, score and cost (deterministic).

    Queries are split at random into train and test, so test queries are unseen in training but come
    from the same families, entities and number ranges.
    """
    rng = random.Random(seed)
    prices = {m.name: (m.price.input, m.price.output) for m in suite_pool().models}
    questions = _questions(rng, per_family)
    rng.shuffle(questions)
    n_test = int(round(len(questions) * test_fraction))
    rows: list[dict] = []
    for k, (family, question, answer, right) in enumerate(questions):
        split = "test" if k < n_test else "train"
        for model in _MODELS:
            for tool in _TOOLS:
                ok = (model, tool) in right
                if family == "arithmetic" and tool == "none" and model == "large-lm" and int(answer) < 1000:
                    ok = True  # the large model multiplies small numbers in its head
                given = answer if ok else _wrong(rng, answer, family)
                tin, tout = _TOKENS[tool]
                tin += len(question) // 4
                pin, pout = prices[model]
                rows.append({
                    "query_id": query_key(SUITE_BENCHMARK, question), "benchmark": SUITE_BENCHMARK,
                    "split": split, "domain": family, "query": question, "reference": answer,
                    "model": model, "tool": tool, "answer": given, "response": f"Final answer: {given}",
                    "score": 1.0 if ok else 0.0, "cost": (tin * pin + tout * pout) / 1_000_000,
                    "input_tokens": tin, "output_tokens": tout, "latency_s": 0.0, "calls": 1,
                    "error": "", "source": "synthetic", "schema_version": SCHEMA_VERSION,
                })
    return pd.DataFrame(rows)


def _norm(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().casefold().rstrip(".")
    return text.replace(",", "") if re.fullmatch(r"-?[\d,]+", text) else text


def suite_judge(task: Task, prediction: str) -> float:
    """The suite's grader: exact match after case, space, trailing-dot and thousands-separator folding."""
    return 1.0 if _norm(prediction) == _norm(task.reference) else 0.0
