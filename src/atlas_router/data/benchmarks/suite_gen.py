"""The generator of the built-in suite: seeded code, our own wording, no copied benchmark text.

Six domains, each its own benchmark, chosen so that different pairs of the embedded pool win:
multi-digit arithmetic (calculator, python), algorithmic and grade-school word problems (python),
unit and date arithmetic (python, calculator), facts held by the bundled documents (web-search),
short code tasks checked by their output (python) and plain common sense (the model alone).

Every item carries the id of the template that worded it and that template's split. Train and test
templates are disjoint within each domain, so a router evaluated on the test split never saw the
test wording. ``python -m atlas_router.data.benchmarks.suite_gen`` rewrites the bundled JSONL files;
a test checks that the shipped files are exactly what this code generates.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
TASKS_DIR = RESOURCES / "tasks"
DOCS_FILE = RESOURCES / "docs" / "default.jsonl"
SEED = 20260112

Item = tuple[str, Any]  # (question, answer: a string or a list of accepted strings)


@dataclass(frozen=True)
class Template:
    id: str
    split: str  # "train" or "test"
    make: Callable[[random.Random], Item]
    count: int


def _n(lo: int, hi: int) -> Callable[[random.Random], int]:
    return lambda r: r.randint(lo, hi)


# -- arithmetic: calculator / python territory -------------------------------------------------------

def _arithmetic() -> list[Template]:
    def mul(fmt: str, a: tuple[int, int], b: tuple[int, int]):
        def make(r: random.Random) -> Item:
            x, y = r.randint(*a), r.randint(*b)
            return fmt.format(a=x, b=y), str(x * y)
        return make

    def add3(fmt: str):
        def make(r: random.Random) -> Item:
            x, y, z = (r.randint(10_000, 99_999) for _ in range(3))
            return fmt.format(a=x, b=y, c=z), str(x + y + z)
        return make

    def sub(fmt: str):
        def make(r: random.Random) -> Item:
            x = r.randint(100_000, 999_999)
            y = r.randint(10_000, x - 1)
            return fmt.format(a=x, b=y), str(x - y)
        return make

    def div(fmt: str):
        def make(r: random.Random) -> Item:
            q, y = r.randint(100, 999), r.randint(12, 99)
            return fmt.format(a=q * y, b=y), str(q)
        return make

    def square(fmt: str):
        def make(r: random.Random) -> Item:
            x = r.randint(101, 999)
            return fmt.format(a=x), str(x * x)
        return make

    return [
        Template("arith-what-times", "train", mul("What is {a} * {b}?", (1000, 9999), (11, 99)), 20),
        Template("arith-calc-times", "train", mul("Calculate {a} times {b}.", (100, 999), (100, 999)), 12),
        Template("arith-compute-sum3", "train", add3("Compute {a} + {b} + {c}."), 14),
        Template("arith-what-minus", "train", sub("What is {a} - {b}?"), 14),
        Template("arith-what-div", "train", div("What is {a} / {b}?"), 10),
        Template("arith-squared", "train", square("What is {a} squared?"), 8),
        Template("arith-multiply-by", "test", mul("Multiply {a} by {b}.", (1000, 9999), (11, 99)), 10),
        Template("arith-product-of", "test", mul("Find the product of {a} and {b}.", (100, 999), (100, 999)), 8),
        Template("arith-sum-of", "test", add3("What is the sum of {a}, {b} and {c}?"), 6),
        Template("arith-subtract-from", "test", sub("Subtract {b} from {a}. What is left?"), 6),
        Template("arith-divide", "test", div("Divide {a} by {b}."), 6),
    ]


# -- word problems: algorithmic counting and grade-school arithmetic -------------------------------

_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam", "Maya",
          "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _word_problems() -> list[Template]:
    def sum_to(fmt: str):
        def make(r: random.Random) -> Item:
            n = r.randint(50, 999)
            return fmt.format(n=n), str(n * (n + 1) // 2)
        return make

    def multiples(fmt: str):
        def make(r: random.Random) -> Item:
            n, k = r.randint(200, 5000), r.randint(3, 17)
            return fmt.format(n=n, k=k), str(n // k)
        return make

    def fib(r: random.Random) -> Item:
        n = r.randint(15, 40)
        return f"What is the {n}th Fibonacci number, counting F(1) = F(2) = 1?", str(_fib(n))

    def shop(r: random.Random) -> Item:
        a, b, d = r.randint(12, 95), r.randint(6, 48), r.randint(3, 30)
        return (f"A shop sells {a} boxes a day and each box holds {b} pencils. How many pencils does it sell in "
                f"{d} days?", str(a * b * d))

    def savings(r: random.Random) -> Item:
        name, a, w = r.choice(_NAMES), r.randint(15, 95), r.randint(6, 52)
        s = r.randint(10, a * w - 1)
        return (f"{name} saves {a} dollars every week. After {w} weeks {name} spends {s} dollars. How many dollars "
                "are left?", str(a * w - s))

    def tickets(r: random.Random) -> Item:
        adults, kids, pa, pk = r.randint(12, 240), r.randint(12, 240), r.randint(11, 45), r.randint(4, 19)
        return (f"A museum sold {adults} adult tickets at {pa} dollars each and {kids} child tickets at {pk} dollars "
                "each. How many dollars did it take in?", str(adults * pa + kids * pk))

    def squares(r: random.Random) -> Item:
        n = r.randint(10, 60)
        return f"What is the sum of the squares of the integers from 1 to {n}?", str(n * (n + 1) * (2 * n + 1) // 6)

    def trees(r: random.Random) -> Item:
        rows, cols, extra = r.randint(12, 85), r.randint(12, 85), r.randint(5, 99)
        return (f"A farmer plants {rows} rows of {cols} trees, then {extra} more trees along the fence. How many trees "
                "did the farmer plant?", str(rows * cols + extra))

    def train(r: random.Random) -> Item:
        v, h = r.randint(45, 180), r.randint(3, 14)
        return f"A train travels at {v} km per hour for {h} hours. How many kilometres does it cover?", str(v * h)

    def evens(r: random.Random) -> Item:
        n = 2 * r.randint(30, 400)
        return f"What is the total of all even numbers from 2 to {n}?", str((n // 2) * (n // 2 + 1))

    def car(r: random.Random) -> Item:
        v, h = r.randint(35, 90), r.randint(2, 12)
        return f"A car drives at {v} miles per hour for {h} hours. How many miles does it travel?", str(v * h)

    def crates(r: random.Random) -> Item:
        a, b = r.randint(12, 96), r.randint(15, 240)
        return f"Each crate holds {a} apples. How many apples are there in {b} crates?", str(a * b)

    def pages(r: random.Random) -> Item:
        name, p, d = r.choice(_NAMES), r.randint(12, 80), r.randint(7, 60)
        return f"{name} reads {p} pages a day. How many pages does {name} read in {d} days?", str(p * d)

    def tank(r: random.Random) -> Item:
        a = r.randint(1000, 9999)
        b = r.randint(100, a - 1)
        return (f"A tank holds {a} litres of water. After {b} litres are drained, how many litres are left?",
                str(a - b))

    def printer(r: random.Random) -> Item:
        a, m = r.randint(12, 60), r.randint(15, 180)
        return f"A printer prints {a} pages per minute. How many pages does it print in {m} minutes?", str(a * m)

    # One-step problems (the first five) sit beside multi-step ones in both splits, so the train split
    # shows where a tool helps on word problems, not only where nothing does. Appended last: the rows
    # generated before them are unchanged.
    return [
        Template("wp-sum-to-n", "train", sum_to("What is the sum of all whole numbers from 1 to {n}?"), 14),
        Template("wp-multiples-count", "train", multiples("How many multiples of {k} are there from 1 to {n}?"), 14),
        Template("wp-fibonacci", "train", fib, 10),
        Template("wp-shop-pencils", "train", shop, 12),
        Template("wp-weekly-savings", "train", savings, 12),
        Template("wp-museum-tickets", "train", tickets, 12),
        Template("wp-add-every-integer", "test", sum_to("Add up every integer between 1 and {n} inclusive. What total "
                                                         "do you get?"), 6),
        Template("wp-divisible-by", "test", multiples("How many numbers from 1 to {n} are divisible by {k}?"), 6),
        Template("wp-sum-of-squares", "test", squares, 6),
        Template("wp-farmer-trees", "test", trees, 8),
        Template("wp-train-distance", "test", train, 8),
        Template("wp-even-total", "test", evens, 6),
        Template("wp-car-miles", "train", car, 9),
        Template("wp-apple-crates", "train", crates, 9),
        Template("wp-pages-read", "train", pages, 9),
        Template("wp-tank-drained", "train", tank, 9),
        Template("wp-printer-pages", "test", printer, 6),
    ]


# -- units and dates --------------------------------------------------------------------------------

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]


def _date_text(d: dt.date) -> str:
    return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"


def _two_dates(r: random.Random) -> tuple[dt.date, dt.date]:
    start = dt.date(r.randint(2015, 2030), 1, 1) + dt.timedelta(days=r.randint(0, 364))
    return start, start + dt.timedelta(days=r.randint(20, 400))


def _units() -> list[Template]:
    def scale(fmt: str, lo: int, hi: int, factor: int, halves: bool = False):
        def make(r: random.Random) -> Item:
            x: float = r.randint(lo, hi)
            if halves and r.random() < 0.4:
                x += 0.5
            shown = f"{x:g}"
            return fmt.format(x=shown), f"{x * factor:g}"
        return make

    def days_between(fmt: str):
        def make(r: random.Random) -> Item:
            a, b = _two_dates(r)
            return fmt.format(a=_date_text(a), b=_date_text(b)), str((b - a).days)
        return make

    def day_of_year(r: random.Random) -> Item:
        d = dt.date(r.randint(2015, 2030), 1, 1) + dt.timedelta(days=r.randint(30, 364))
        return f"Counting January 1 as day 1, what day of the year is {_date_text(d)}?", str(d.timetuple().tm_yday)

    def weeks_days(r: random.Random) -> Item:
        w, d = r.randint(3, 60), r.randint(2, 6)
        return f"How many days are in {w} weeks and {d} days?", str(7 * w + d)

    return [
        Template("unit-seconds-in-hours", "train", scale("How many seconds are in {x} hours?", 2, 72, 3600, True), 14),
        Template("unit-km-to-m", "train", scale("Convert {x} kilometres to metres.", 2, 950, 1000, True), 12),
        Template("unit-minutes-in-days", "train", scale("How many minutes are in {x} days?", 2, 90, 1440), 12),
        Template("unit-kg-to-g", "train", scale("What is {x} kilograms in grams?", 2, 500, 1000, True), 10),
        Template("date-days-from-to", "train", days_between("How many days are there from {a} to {b}?"), 18),
        Template("unit-weeks-and-days", "train", weeks_days, 10),
        Template("unit-hours-in-weeks", "test", scale("How many hours are there in {x} weeks?", 2, 80, 168), 7),
        Template("unit-m-to-cm", "test", scale("Express {x} metres in centimetres.", 3, 900, 100, True), 6),
        Template("unit-seconds-in-minutes", "test", scale("A timer runs for {x} minutes. How many seconds is that?",
                                                          12, 600, 60), 7),
        Template("date-days-pass", "test", days_between("How many days pass between {a} and {b}?"), 8),
        Template("date-day-of-year", "test", day_of_year, 6),
    ]


# -- facts held by the bundled documents (web-search territory) -------------------------------------

def _doc_facts() -> dict[str, list[tuple[str, str]]]:
    """(subject, answer) per relation, read from the bundled collection so every answer is in a document."""
    facts: dict[str, list[tuple[str, str]]] = {"capital": [], "largest": [], "born": [], "died": [], "currency": []}
    for line in DOCS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        title, text = doc["title"], doc["text"]
        if "(" in title:
            continue
        m = re.search(r"[Ii]ts capital(?: and largest city)? is ([A-Z][^.,;(]+?)(?:[.,;(]| and )", text)
        if m:
            facts["capital"].append((title, m.group(1).strip()))
        m = (re.search(r"[Ii]ts capital and largest city is ([A-Z][^.,;(]+?)[.,;(]", text)
             or re.search(r"[Ii]ts largest city is ([A-Z][^.,;(]+?)[.,;(]", text))
        if m:
            facts["largest"].append((title, m.group(1).strip()))
        m = re.match(r"[^(]*\((\d{3,4})-(\d{3,4})\)", text)
        if m:
            facts["born"].append((title, m.group(1)))
            facts["died"].append((title, m.group(2)))
        m = re.search(r"[Tt]he (?:official )?currency is the ([A-Za-z][\w ]+?)[.,]", text)
        if m:
            facts["currency"].append((title, m.group(1).strip()))
    return facts


_FACTS_PER_RELATION = {"capital": 45, "largest": 25, "born": 22, "died": 18, "currency": 10}


def _facts(rng: random.Random) -> list[Template]:
    """One template per (relation, wording); each (subject, relation) is asked once, in one split."""
    wordings = {
        "capital": [("train", "What is the capital of {s}?"), ("train", "Name the capital city of {s}."),
                    ("test", "Which city is the capital of {s}?")],
        "largest": [("train", "What is the largest city in {s}?"), ("test", "Which city is the biggest in {s}?")],
        "born": [("train", "In what year was {s} born?"), ("test", "{s} was born in which year?")],
        "died": [("train", "In which year did {s} die?"), ("test", "What year did {s} pass away?")],
        "currency": [("train", "What currency is used in {s}?"), ("test", "What is the official currency of {s}?")],
    }
    templates = []
    for relation, pairs in _doc_facts().items():
        pairs = sorted(pairs)
        rng.shuffle(pairs)
        pairs = pairs[:_FACTS_PER_RELATION[relation]]
        forms = wordings[relation]
        n_test = max(1, round(len(pairs) * 0.3))
        test_pairs, train_pairs = pairs[:n_test], pairs[n_test:]
        for split, chosen in (("train", train_pairs), ("test", test_pairs)):
            mine = [(i, f) for i, (s, f) in enumerate(forms) if s == split]
            for j, (subject, answer) in enumerate(chosen):
                index, form = mine[j % len(mine)]
                question = form.format(s=subject)
                answers = [answer]
                if relation == "currency" and " " in answer:
                    answers.append(answer.split()[-1])  # "Mexican peso" or "peso"
                templates.append(Template(f"fact-{relation}-{index}", split,
                                          (lambda q, a: lambda _r: (q, a))(question, answers), 1))
    return templates


# -- short code tasks checked by their output -------------------------------------------------------

_WORDS = ["atlas", "router", "python", "kernel", "garden", "window", "planet", "rocket", "silver", "yellow", "banana",
          "cactus", "dragon", "forest", "guitar", "harbor", "island", "jungle", "lantern", "marble", "notebook",
          "orange", "pepper", "quartz", "rabbit", "saddle", "tomato", "umbrella", "violin", "walrus", "zephyr",
          "blanket", "cobalt", "dolphin", "engine", "falcon", "glacier", "horizon", "igloo", "jasmine"]


def _code() -> list[Template]:
    def reverse(fmt: str):
        def make(r: random.Random) -> Item:
            w = r.choice(_WORDS)
            return fmt.format(w=w), w[::-1]
        return make

    def count_letter(r: random.Random) -> Item:
        w = r.choice(_WORDS)
        ch = r.choice(sorted(set(w)))
        return f"How many times does the letter '{ch}' appear in '{w}'?", str(w.count(ch))

    def print_expr(r: random.Random) -> Item:
        a, b, c, k = r.randint(10, 99), r.randint(10, 99), r.randint(10, 99), r.randint(3, 29)
        return f"What does this Python code print? print(sum([{a}, {b}, {c}]) * {k})", str((a + b + c) * k)

    def len_times(r: random.Random) -> Item:
        w, k = r.choice(_WORDS), r.randint(3, 47)
        return f"What is the value of len('{w}') * {k} in Python?", str(len(w) * k)

    def sort_list(r: random.Random) -> Item:
        xs = r.sample(range(1, 99), 5)
        return (f"Sort these numbers in ascending order: {', '.join(map(str, xs))}.",
                ", ".join(map(str, sorted(xs))))

    def mod_div(r: random.Random) -> Item:
        a, b = r.randint(100, 999), r.randint(7, 40)
        return (f"Run this Python snippet and report its output: x = {a}; y = {b}; print(x % y + x // y)",
                str(a % b + a // b))

    def vowels(r: random.Random) -> Item:
        w = r.choice(_WORDS)
        return f"Count the vowels in the word '{w}'.", str(sum(ch in "aeiou" for ch in w))

    def largest(r: random.Random) -> Item:
        xs = r.sample(range(100, 9999), 6)
        return f"Which number is the largest in the list [{', '.join(map(str, xs))}]?", str(max(xs))

    def alphabetical(r: random.Random) -> Item:
        w = r.choice(_WORDS)
        return f"Rewrite '{w}' with its letters in alphabetical order.", "".join(sorted(w))

    return [
        Template("code-reverse", "train", reverse("Reverse the string '{w}'."), 14),
        Template("code-count-letter", "train", count_letter, 14),
        Template("code-print-sum", "train", print_expr, 16),
        Template("code-len-times", "train", len_times, 14),
        Template("code-sort", "train", sort_list, 12),
        Template("code-mod-div", "test", mod_div, 9),
        Template("code-backwards", "test", reverse("Write the string '{w}' backwards."), 8),
        Template("code-vowels", "test", vowels, 8),
        Template("code-largest", "test", largest, 7),
        Template("code-alphabetical", "test", alphabetical, 6),
    ]


# -- common sense: the model alone should do ---------------------------------------------------------

_LEGS = {"dog": "4", "cat": "4", "horse": "4", "cow": "4", "spider": "8", "chicken": "2", "duck": "2", "ant": "6",
         "bee": "6", "sheep": "4", "goat": "4", "pig": "4", "beetle": "6", "parrot": "2", "lion": "4", "elephant": "4"}
_COLOURS = {"a ripe banana": "yellow", "fresh grass": "green", "the sky on a clear day": "blue", "fresh snow": "white",
            "coal": "black", "a ripe tomato": "red", "a lemon": "yellow", "a carrot": "orange", "milk": "white",
            "a strawberry": "red", "a leaf in summer": "green", "a crow": "black", "a polar bear's fur": "white"}
_OPPOSITES = {"hot": "cold", "up": "down", "big": "small", "day": "night", "fast": "slow", "open": "closed",
              "wet": "dry", "happy": "sad", "early": "late", "full": "empty", "left": "right", "tall": "short",
              "hard": "soft", "loud": "quiet", "light": "dark", "old": "young", "win": "lose", "begin": "end",
              "inside": "outside", "push": "pull", "true": "false", "thick": "thin", "rich": "poor", "yes": "no"}
_BABIES = {"cat": ["kitten", "kitty"], "dog": ["puppy", "pup"], "cow": ["calf"], "sheep": ["lamb"], "horse": ["foal"],
           "frog": ["tadpole"], "duck": ["duckling"], "bear": ["cub"], "lion": ["cub"], "goose": ["gosling"],
           "kangaroo": ["joey"], "pig": ["piglet"]}
_PLURALS = {"mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "goose": "geese", "man": "men",
            "woman": "women", "person": "people", "leaf": "leaves", "knife": "knives", "ox": "oxen", "cactus": "cacti"}
_SIDES = {"triangle": "3", "square": "4", "pentagon": "5", "hexagon": "6", "octagon": "8", "rectangle": "4",
          "heptagon": "7", "decagon": "10"}
_COUNTS = {"days are in a week": "7", "months are in a year": "12", "hours are in a day": "24",
           "minutes are in an hour": "60", "days are in a leap year": "366", "seconds are in a minute": "60",
           "players does a soccer team have on the field": "11", "wheels does a bicycle have": "2",
           "legs does a tripod have": "3", "letters are in the English alphabet": "26"}


def _each(table: dict[str, Any], fmt: str, tid: str, split: str, keys: list[str]) -> list[Template]:
    return [Template(tid, split, (lambda q, a: lambda _r: (q, a))(fmt.format(k=k), table[k]), 1) for k in keys]


def _halves(table: dict[str, Any], rng: random.Random) -> tuple[list[str], list[str]]:
    keys = sorted(table)
    rng.shuffle(keys)
    cut = round(len(keys) * 0.65)
    return keys[:cut], keys[cut:]


def _common_sense(rng: random.Random) -> list[Template]:
    out: list[Template] = []
    a, b = _halves(_LEGS, rng)
    out += _each(_LEGS, "How many legs does a {k} have?", "cs-legs", "train", a)
    out += _each(_LEGS, "A {k} walks on how many legs?", "cs-walks-on", "test", b)
    a, b = _halves(_COLOURS, rng)
    out += _each(_COLOURS, "What colour is {k}?", "cs-colour", "train", a)
    out += _each(_COLOURS, "Name the usual colour of {k}.", "cs-usual-colour", "test", b)
    a, b = _halves(_OPPOSITES, rng)
    out += _each(_OPPOSITES, "What is the opposite of '{k}'?", "cs-opposite", "train", a)
    out += _each(_OPPOSITES, "Give a word that means the reverse of '{k}'.", "cs-reverse-word", "test", b)
    a, b = _halves(_BABIES, rng)
    out += _each(_BABIES, "What is a baby {k} called?", "cs-baby", "train", a)
    out += _each(_BABIES, "What do we call a young {k}?", "cs-young", "test", b)
    out += _each(_PLURALS, "What is the plural of '{k}'?", "cs-plural", "train", sorted(_PLURALS))
    out += _each(_SIDES, "How many sides does a {k} have?", "cs-sides", "test", sorted(_SIDES))
    out += _each(_COUNTS, "How many {k}?", "cs-how-many", "train", sorted(_COUNTS))
    return out


# -- the suite --------------------------------------------------------------------------------------

DOMAINS: dict[str, tuple[str, str]] = {  # benchmark -> (domain, grader)
    "suite-arithmetic": ("arithmetic", "number"),
    "suite-word-problems": ("word-problems", "number"),
    "suite-units-dates": ("units-dates", "number"),
    "suite-facts": ("facts", "short_answer"),
    "suite-code": ("code-output", "short_answer"),
    "suite-common-sense": ("common-sense", "short_answer"),
}


def _templates(name: str, rng: random.Random) -> list[Template]:
    if name == "suite-arithmetic":
        return _arithmetic()
    if name == "suite-word-problems":
        return _word_problems()
    if name == "suite-units-dates":
        return _units()
    if name == "suite-facts":
        return _facts(rng)
    if name == "suite-code":
        return _code()
    return _common_sense(rng)


def generate(name: str, seed: int = SEED) -> list[dict[str, Any]]:
    """The rows of one suite benchmark: id, question, answer, template, split (no duplicate questions)."""
    rng = random.Random(f"{seed}:{name}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for template in _templates(name, rng):
        made, tries = 0, 0
        while made < template.count and tries < 50 * template.count:
            tries += 1
            question, answer = template.make(rng)
            if question in seen:
                continue
            seen.add(question)
            made += 1
            rows.append({"id": f"{name}-{len(rows):04d}", "question": question, "answer": answer,
                         "template": template.id, "split": template.split})
    return rows


def write_all(out_dir: Path = TASKS_DIR) -> dict[str, int]:
    """Regenerate every bundled suite file; returns rows per benchmark."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in DOMAINS:
        rows = generate(name)
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
        counts[name] = len(rows)
    return counts


if __name__ == "__main__":
    print(write_all())
