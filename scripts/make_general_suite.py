"""Generate the general-skills suite ``evals/general.jsonl`` (catastrophic-forgetting check).

Offline and deterministic: pure Python, a fixed seed, no hub, no model. Re-running rewrites a
byte-identical file (sorted keys, one JSON object per line). Three skills:

* ``instruction`` (160): verifiable instruction following in the style of IFEval: repeat a
  sentence exactly, copy a JSON object and nothing else, use / avoid a given word, a bullet
  list of 2 items, yes/no answered with only yes or no, and a few items each of all
  lowercase, all capitals, exactly one word, at most N words, start / end with a word,
  double quotes;
* ``arithmetic`` (80): small sums, doubles, halves, products, differences and quotients with
  a unique whole-number answer;
* ``facts`` (80): capitals, opposites, plurals, languages, famous people, currencies, basic
  science: things a 135M-parameter instruction model mostly knows.

The mix leans toward kinds the default base model (SmolLM2-135M-Instruct) passes, so that
forgetting shows up as a drop; the checks themselves are not loosened for it.

Every item is ``{"id", "skill", "kind", "prompt", "assert"}`` where ``assert`` holds 1-3
promptfoo built-in assertions. Every expected answer is short (the evaluation generates at
most 32 new tokens per item). ``cases()`` also returns, per item, hand-written correct and
plausible wrong answers (kept out of the JSONL): tests/test_general_suite.py runs them
through promptfoo's own evaluator, and every correct one must pass and every wrong one fail.

    python scripts/make_general_suite.py           # writes evals/general.jsonl
    python scripts/make_general_suite.py --check   # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

SEED = 135
OUT = Path(__file__).resolve().parent.parent / "evals" / "general.jsonl"
SKILLS = ("instruction", "arithmetic", "facts")
# Deliberately its own copy of pipelines.evaluation.suite.GENERAL_ASSERTIONS: this generator stays
# pure Python (it imports nothing of the engine it feeds), and the engine's list then checks its output.
ALLOWED_ASSERTS = (
    "contains",
    "icontains",
    "not-contains",
    "not-icontains",
    "equals",
    "regex",
    "not-regex",
    "starts-with",
    "is-json",
    "contains-any",
    "icontains-any",
    "javascript",
)


@dataclass(frozen=True)
class Case:
    """One suite item plus answers that must pass (``good``) and must fail (``bad``)."""

    item: dict
    good: tuple[str, ...]
    bad: tuple[str, ...]


# --------------------------------------------------------------------------- regex helpers
# Assertion values are JavaScript regexes (promptfoo: ``new RegExp(value)``, no flags), so
# case-insensitivity is spelled out as [Xx] classes. Values are also rendered by nunjucks:
# never emit "{{", "{%" or "{#".
_SPECIAL = set("\\^$.|?*+()[]{}/")


def ci(text: str) -> str:
    """Case-insensitive JS regex for ``text``; spaces match any whitespace, hyphens also a space."""
    out = []
    for ch in text:
        if ch.isalpha() and ch.lower() != ch.upper():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        elif ch == " ":
            out.append(r"\s+")
        elif ch == "-":
            out.append(r"[- ]?")
        elif ch in _SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def words_re(*alternatives: str) -> str:
    """Any of the alternatives as a whole word, case-insensitive."""
    return r"\b(?:" + "|".join(ci(a) for a in alternatives) + r")\b"


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_word(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
    if n == 100:
        return "one hundred"
    raise ValueError(n)


def number_re(n: int) -> str:
    """``n`` as a whole number (``12``, ``12.``, ``12.0``, ``$12``; not ``120``, ``-12``,
    ``12.5``, ``1.2``), or spelled out (``twelve``, ``Twenty-four``)."""
    digits = rf"(?<![\d.,-]){n}(?:\.0+)?(?![.,]?\d)"
    if n > 100:
        return digits
    word = rf"\b{ci(number_word(n))}\b"
    if 1 <= n % 10 and n < 10:  # "four", but not the tail of "twenty-four"
        word = rf"(?<![Tt][Yy][- ]){word}"
    if n % 10 == 0 and 20 <= n < 100:  # "twenty", but not the head of "twenty-one"
        units = "|".join(ci(w) for w in _ONES[1:10])
        word = rf"{word}(?![- ](?:{units})\b)"
    return rf"{digits}|{word}"


def regex(value: str) -> dict:
    return {"type": "regex", "value": value}


def not_regex(value: str) -> dict:
    return {"type": "not-regex", "value": value}


def js(expression: str) -> dict:
    return {"type": "javascript", "value": expression}


HAS_LETTER = regex("[A-Za-z]")
WORDS = "output.trim().split(/\\s+/).filter(Boolean).length"
LOWERCASE = js("output === output.toLowerCase() && /[a-z]/.test(output)")
UPPERCASE = js("output === output.toUpperCase() && /[A-Z]/.test(output)")


# Kinds where echoing the prompt back may legitimately pass (it contains the required
# word, or is itself short enough / comma-free); for every other kind the prompt itself is
# one of the wrong answers, so parroting the question never scores.
ECHO_MAY_PASS = {"include-word", "max-words", "no-comma"}


def item(skill: str, kind: str, index: int, prompt: str, asserts: list[dict], good: list[str], bad: list[str]) -> Case:
    prefix = {"instruction": "ifeval", "arithmetic": "arith", "facts": "fact"}[skill]
    if kind not in ECHO_MAY_PASS:
        bad = [*bad, prompt]
    return Case(
        item={"id": f"{prefix}-{kind}-{index:03d}", "skill": skill, "kind": kind, "prompt": prompt, "assert": asserts},
        good=tuple(good),
        bad=tuple(bad),
    )


# --------------------------------------------------------------------------- instruction
# The mix leans on what the default base model (SmolLM2-135M-Instruct) does reliably, so
# that forgetting shows as a drop: repeating text verbatim, copying a JSON object, using or
# avoiding a given word. The classic IFEval formats it mostly fails (case, word counts,
# quotes, start/end words) are kept at a few items each, for stronger base models.
EASY_QA = [
    ("What colour is the sky on a clear day?", ["blue"], "green"),
    ("What colour is fresh grass?", ["green"], "purple"),
    ("What colour is snow?", ["white"], "black"),
    ("What colour is a ripe banana?", ["yellow"], "blue"),
    ("What colour is coal?", ["black"], "white"),
    ("What animal says moo?", ["cow", "cows"], "dog"),
    ("What animal barks?", ["dog", "dogs"], "cat"),
    ("What animal says meow?", ["cat", "cats", "kitten"], "cow"),
    ("What do bees make?", ["honey"], "milk"),
    ("Which planet do we live on?", ["earth"], "mars"),
    ("What is frozen water called?", ["ice"], "steam"),
    ("What shape has three sides?", ["triangle"], "square"),
    ("What season comes after winter?", ["spring"], "autumn"),
    ("What is the opposite of day?", ["night"], "morning"),
]

REPEAT_SENTENCES = [
    "The green frog sat on a log.",
    "Birds sing in the morning.",
    "My red kite flies high.",
    "The old clock ticks loudly.",
    "Snow fell on the quiet town.",
    "A small boat crossed the lake.",
    "The children played in the park.",
    "Bright stars filled the sky.",
    "The cat chased a yellow ball.",
    "We walked along the sandy beach.",
    "The baker made fresh bread.",
    "A tall tree stood by the river.",
    "The wind blew through the hills.",
    "Grandma knitted a warm scarf.",
    "The dog slept by the fire.",
    "Rain tapped on the window.",
    "The moon rose over the hills.",
    "She painted the door blue.",
    "A bee landed on the flower.",
    "The train left at noon.",
    "He planted tomatoes in spring.",
    "The soup was too hot to eat.",
    "Two ducks swam in the pond.",
    "The library opens at nine.",
    "My brother plays the drums.",
    "The leaves turned orange in autumn.",
    "A fox ran across the field.",
    "The kettle began to whistle.",
    "We had pancakes for breakfast.",
    "The river flows to the sea.",
    "An owl hooted in the dark.",
    "The bus was full of people.",
    "Her garden is full of roses.",
    "The lamp lit up the room.",
    "Fresh snow covered the road.",
    "The horse jumped over the fence.",
    "I left my hat on the chair.",
    "The waves crashed on the rocks.",
    "A rainbow appeared after the storm.",
    "The teacher wrote on the board.",
    "Our team won the final game.",
    "The bread smells very good.",
    "A mouse hid under the table.",
    "The bell rang three times.",
    "Sunflowers grow very tall.",
    "The ship sailed into the harbour.",
    "My sister reads every night.",
    "The ice melted in the sun.",
]

JSON_OBJECTS = [
    {"color": "blue"},
    {"fruit": "apple"},
    {"city": "Rome"},
    {"animal": "cat"},
    {"size": "small"},
    {"day": "Monday"},
    {"ok": True},
    {"count": 3},
    {"planet": "Mars"},
    {"season": "winter"},
    {"shape": "circle"},
    {"drink": "tea"},
    {"pet": "dog"},
    {"tree": "oak"},
    {"sport": "tennis"},
    {"number": 42},
    {"done": False},
    {"name": "Ana", "age": 7},
    {"x": 1, "y": 2},
    {"first": "a", "last": "z"},
    {"bird": "owl"},
    {"metal": "gold"},
    {"flower": "rose"},
    {"instrument": "piano"},
    {"month": "May"},
    {"width": 10, "height": 20},
]

INCLUDE_WORD = [
    ("the ocean", "blue", "The ocean looks blue on a sunny day.", "The ocean is very deep and wide."),
    ("a garden", "flowers", "A garden is full of flowers.", "A garden is a nice place to relax."),
    ("the night sky", "stars", "Stars shine in the night sky.", "The night sky is very dark."),
    ("a kitchen", "cook", "We cook our meals in the kitchen.", "A kitchen has a sink and a table."),
    ("a farm", "animals", "Animals live on a farm.", "A farm is in the countryside."),
    ("the beach", "sand", "The beach is covered in warm sand.", "The beach is a fun place in summer."),
    ("a school", "learn", "Children learn new things at school.", "A school is a big building."),
    ("autumn", "leaves", "In autumn the leaves turn orange.", "Autumn comes after summer."),
    ("a river", "water", "A river carries fresh water to the sea.", "A river is long and winding."),
    ("a birthday party", "cake", "Everyone eats cake at a birthday party.", "A birthday party is fun."),
    ("the mountains", "snow", "Snow covers the tops of the mountains.", "The mountains are very tall."),
    ("a park", "trees", "A park has green grass and tall trees.", "A park is a good place for a walk."),
    ("a rainy day", "umbrella", "On a rainy day I carry an umbrella.", "A rainy day is wet and grey."),
    ("a zoo", "lions", "You can see lions at the zoo.", "A zoo is a place to visit."),
    ("the moon", "bright", "The moon is bright tonight.", "The moon goes around the Earth."),
    ("a library", "books", "A library lends books to everyone.", "A library is a quiet place."),
    ("a forest", "green", "The forest is green and calm.", "A forest has many tall trees."),
    ("the sun", "warm", "The sun feels warm on my face.", "The sun rises in the east."),
    ("a cat", "soft", "My cat has soft fur.", "A cat likes to sleep all day."),
    ("a train", "fast", "The train is very fast.", "A train runs on rails."),
    ("music", "happy", "Music makes me happy.", "Music can be loud or quiet."),
    ("a bird", "sing", "Birds sing in the morning.", "A bird has two wings."),
    ("winter", "cold", "Winter is cold and dark.", "Winter is the last season of the year."),
    ("a city", "streets", "The city has busy streets.", "A city is a big place."),
    ("breakfast", "eggs", "I eat eggs for breakfast.", "Breakfast is the first meal of the day."),
    ("a lake", "fish", "Many fish live in the lake.", "A lake is calm in the morning."),
]

FORBIDDEN_WORD = [
    ("a dog", "dog", "It is a loyal pet that barks.", "A dog is a loyal pet."),
    ("the sun", "hot", "It is a bright star in the sky.", "The sun is very hot."),
    ("a cat", "cat", "It is a small pet that purrs.", "My cat sleeps all day."),
    ("the sea", "water", "It is wide, blue and salty.", "The sea is salty water."),
    ("a car", "wheels", "It is a vehicle you drive on roads.", "A car has four wheels."),
    ("winter", "cold", "It is the season with snow and short days.", "Winter is cold."),
    ("a book", "read", "It has pages full of words and stories.", "You read a book."),
    ("an apple", "fruit", "It is round, red and crunchy.", "An apple is a fruit."),
    ("the moon", "night", "It shines in the dark sky and orbits Earth.", "The moon comes out at night."),
    ("a bird", "fly", "It has feathers, wings and a beak.", "A bird can fly."),
    ("a tree", "green", "It is tall, with a trunk, roots and leaves.", "A tree is tall and green."),
    ("rain", "wet", "It is water falling from the clouds.", "Rain makes everything wet."),
    ("a house", "home", "It is a building with a roof and walls.", "A house is a home."),
    ("the ocean", "blue", "It is vast, deep and salty.", "The ocean is deep and blue."),
]


def _qa(i: int) -> tuple[str, list[str], str]:
    return EASY_QA[i % len(EASY_QA)]


def instruction_cases() -> list[Case]:
    cases: list[Case] = []
    add = lambda kind, i, prompt, asserts, good, bad: cases.append(  # noqa: E731
        item("instruction", kind, i, prompt, asserts, good, bad)
    )

    # repeat a sentence exactly, and nothing else
    forms = [
        "Repeat this sentence exactly, and say nothing else: {s}",
        "Repeat exactly, word for word, with nothing else: {s}",
        "Copy this sentence exactly and write nothing else: {s}",
    ]
    for i, s in enumerate(REPEAT_SENTENCES):
        core, n = s.rstrip("."), len(s.split())
        add(
            "repeat",
            i + 1,
            forms[i % 3].format(s=s),
            [{"type": "contains", "value": core}, js(f"{WORDS} <= {n + 2}")],
            [s, f'"{s}"', core],
            [
                s.lower(),
                s.replace(s.split()[1], "big", 1),
                f"Sure! Here is the sentence you asked me to repeat: {s}",
                "",
            ],
        )

    # copy a JSON object, and nothing else (keys far from the training data's)
    forms = [
        "Reply with only this JSON object and nothing else: {o}",
        "Output exactly this JSON object, with no other text: {o}",
    ]
    for i, obj in enumerate(JSON_OBJECTS):
        text = json.dumps(obj)
        schema = {
            "type": "object",
            "required": list(obj),
            "additionalProperties": False,
            "properties": {k: {"const": v} for k, v in obj.items()},
        }
        key = next(iter(obj))
        changed = {**obj, key: "other" if isinstance(obj[key], str) else 99}
        add(
            "json",
            i + 1,
            forms[i % 2].format(o=text),
            [{"type": "is-json", "value": schema}],
            [text, json.dumps(obj, indent=2), json.dumps(obj, separators=(",", ":"))],
            [
                json.dumps(changed),
                json.dumps({**obj, "extra": 1}),
                f"```json\n{text}\n```",
                f"Here is the JSON object: {text}",
                str(obj),
                "",
            ],
        )

    # a required word
    forms = [
        'Write one short sentence about {t} that includes the word "{w}".',
        'In one short sentence about {t}, use the word "{w}".',
        'Write a short sentence about {t}. It must contain the word "{w}".',
    ]
    for i, (topic, word, good, bad) in enumerate(INCLUDE_WORD):
        add(
            "include-word",
            i + 1,
            forms[i % 3].format(t=topic, w=word),
            [regex(words_re(word))],
            [good, good.upper()],
            [bad, ""],
        )

    # a forbidden word (and its plural); the answer must still say something
    forms = [
        'Describe {t} in one short sentence without using the word "{w}".',
        'In one short sentence, describe {t}. Do not use the word "{w}".',
        'Write one short sentence about {t}, but never use the word "{w}".',
    ]
    for i, (topic, word, good, bad) in enumerate(FORBIDDEN_WORD):
        add(
            "forbidden-word",
            i + 1,
            forms[i % 3].format(t=topic, w=word),
            [not_regex(words_re(word, word + "s")), HAS_LETTER],
            [good],
            [bad, bad.lower(), bad.upper(), ""],
        )

    # a bullet list of exactly 2 items
    bullets = [
        ("fruits", "Apple", "Banana", "Cherry"),
        ("colours", "Red", "Blue", "Green"),
        ("animals", "Dog", "Cat", "Horse"),
        ("vegetables", "Carrot", "Potato", "Onion"),
        ("countries", "France", "Japan", "Brazil"),
        ("planets", "Mars", "Venus", "Jupiter"),
        ("sports", "Tennis", "Football", "Golf"),
        ("musical instruments", "Piano", "Guitar", "Violin"),
        ("birds", "Robin", "Eagle", "Owl"),
        ("drinks", "Water", "Tea", "Juice"),
    ]
    forms = [
        'Name two {t} as a bullet list with exactly 2 items, one per line, each starting with "- ".',
        'List exactly 2 {t} as bullet points ("- " at the start of each line).',
        'Give a bullet list of 2 {t}. Use "- " for each bullet.',
    ]
    bullet_count = "output.split('\\n').filter(l => /^\\s*[-*\u2022]\\s+\\S/.test(l)).length === 2"
    for i, (t, a, b, c) in enumerate(bullets):
        add(
            "bullets",
            i + 1,
            forms[i % 3].format(t=t),
            [js(bullet_count)],
            [f"- {a}\n- {b}", f"Here are two {t}:\n- {a}\n- {b}", f"* {a}\n* {b}"],
            [f"{a}, {b}", f"- {a}\n- {b}\n- {c}", f"- {a}", f"1. {a}\n2. {b}"],
        )

    # yes/no questions answered with only yes or no
    yes_no = [
        ("Is ice cold?", True),
        ("Is fire cold?", False),
        ("Do fish live in water?", True),
        ("Can a dog fly?", False),
        ("Is seven an odd number?", True),
        ("Is snow hot?", False),
        ("Do birds have feathers?", True),
        ("Does a triangle have four sides?", False),
    ]
    forms = [
        "{q} Answer with only yes or no.",
        'Answer only "yes" or "no": {q}',
        "{q} Reply with just one word: yes or no.",
    ]
    for i, (q, truth) in enumerate(yes_no):
        right, other = ("yes", "no") if truth else ("no", "yes")
        add(
            "yes-no",
            i + 1,
            forms[i % 3].format(q=q),
            [regex(rf"^\W*{ci(right)}\W*$")],
            [right, right.capitalize() + ".", right.upper() + "!"],
            [other.capitalize() + ".", f"{right.capitalize()}, of course.", "Maybe.", ""],
        )

    # all lowercase, with the right answer
    forms = [
        "{q} Write your whole answer in lowercase letters only.",
        "{q} Answer using only lowercase letters, no capitals at all.",
    ]
    for i in range(4):
        q, answers, wrong = _qa(i)
        a = answers[0]
        add(
            "lowercase",
            i + 1,
            forms[i % 2].format(q=q),
            [LOWERCASE, regex(words_re(*answers))],
            [a, f"{a}.", f"the answer is {a}."],
            [a.capitalize(), f"The answer is {a}.", wrong],
        )

    # all capitals, with the right answer
    forms = ["{q} Write your whole answer in capital letters only.", "{q} Answer in all uppercase letters."]
    for i in range(4):
        q, answers, wrong = _qa(i + 4)
        a = answers[0]
        add(
            "uppercase",
            i + 1,
            forms[i % 2].format(q=q),
            [UPPERCASE, regex(words_re(*answers))],
            [a.upper(), f"{a.upper()}.", f"THE ANSWER IS {a.upper()}."],
            [a, a.capitalize(), f"The answer is {a.upper()}.", wrong.upper()],
        )

    # exactly one word, with the right answer
    forms = ["{q} Answer with exactly one word.", "Answer with a single word only. {q}"]
    for i in range(4):
        q, answers, wrong = _qa(i + 8)
        a = answers[0]
        add(
            "one-word",
            i + 1,
            forms[i % 2].format(q=q),
            [js(f"{WORDS} === 1"), regex(words_re(*answers))],
            [a.capitalize(), f"{a}.", f"{a.capitalize()}!"],
            [f"The {a}.", f"It is {a}.", wrong.capitalize(), ""],
        )

    # at most N words, open-ended
    topics = [
        (
            "What is a chair used for?",
            5,
            "For sitting on.",
            "A chair is a piece of furniture that people use when they want to sit down.",
        ),
        (
            "Describe the moon.",
            6,
            "Round, bright and grey.",
            "The moon is a large rocky body that orbits the Earth and reflects light.",
        ),
        (
            "What is rain?",
            8,
            "Water falling from clouds.",
            "Rain is water that falls from the clouds in the sky when drops become heavy.",
        ),
        (
            "What is a library?",
            10,
            "A place with books.",
            "A library is a building where many books are kept so that people can borrow them.",
        ),
    ]
    forms = ["{q} Answer in at most {n} words.", "In {n} words or fewer: {q}"]
    for i, (q, n, short, long) in enumerate(topics):
        add(
            "max-words",
            i + 1,
            forms[i % 2].format(q=q, n=n),
            [js(f"{WORDS} >= 1 && {WORDS} <= {n}")],
            [short, " ".join(["word"] * n)],
            [long, " ".join(["word"] * (n + 1)), ""],
        )

    # start with a given word, then answer correctly
    forms = ['Start your answer with the word "{w}". {q}', '{q} Begin your reply with the word "{w}".']
    for i, w in enumerate(["Yes", "Sure", "Hello", "Okay"]):
        q, answers, wrong = _qa(i + 1)
        a = answers[0]
        add(
            "starts-with",
            i + 1,
            forms[i % 2].format(w=w, q=q),
            [regex(r"^\W*" + ci(w) + r"\b"), regex(words_re(*answers))],
            [f"{w}, {a}.", f"{w}! The answer is {a}.", f"**{w}**: {a}", f"{w.lower()}, {a}"],
            [f"{a.capitalize()}. {w}.", f"The answer is {a}.", f"{w}, {wrong}.", f"{w}s {a}."],
        )

    # end with a given word (the instruction comes first, so an echo does not end with it)
    ends = [
        ("Name a planet.", "done", "Mars. done", "Mars"),
        ("Name a colour.", "thanks", "Red, thanks", "Red"),
        ("Name a fruit.", "please", "An apple, please.", "An apple."),
        ("Name an animal.", "end", "A horse. The end", "A horse."),
    ]
    forms = ['End your answer with the word "{w}". {q}', 'The last word of your reply must be "{w}". {q}']
    for i, (q, w, good, bad) in enumerate(ends):
        add(
            "ends-with",
            i + 1,
            forms[i % 2].format(q=q, w=w),
            [regex(r"\b" + ci(w) + r"\W*$")],
            [good, w],
            [bad, f"{w} is the word", ""],
        )

    # the whole answer wrapped in double quotes, with the right answer
    forms = [
        "{q} Wrap your entire answer in double quotes.",
        "Put your whole answer inside double quotation marks. {q}",
    ]
    for i in range(4):
        q, answers, wrong = _qa(i + 10)
        a = answers[0]
        add(
            "quotes",
            i + 1,
            forms[i % 2].format(q=q),
            [regex('^\\s*["\u201c][\\s\\S]*["\u201d][.!]?\\s*$'), regex(words_re(*answers))],
            [f'"{a}"', f'"The answer is {a}."', f"\u201c{a.capitalize()}\u201d"],
            [a, f'The answer is "{a}".', f'"{wrong}"', f"'{a}'"],
        )
    return cases


# --------------------------------------------------------------------------- arithmetic
# Small operands, and more of the forms the default base model mostly gets right (doubling,
# halving, small sums and products) than differences and quotients, which it mostly gets
# wrong: an item the base model always fails detects no forgetting.
ARITHMETIC = {  # kind: (count, phrasings, operation)
    "add": (26, ["What is the sum of {a} and {b}?", "What is {a} plus {b}?"], lambda a, b: a + b),
    "double": (12, ["What is 2 times {b}?"], lambda a, b: a * b),
    "half": (16, ["What is half of {a}?"], lambda a, b: a // 2),
    "mul": (14, ["What is {a} times {b}?", "Multiply {a} by {b}."], lambda a, b: a * b),
    "sub": (6, ["What is {a} minus {b}?", "Subtract {b} from {a}."], lambda a, b: a - b),
    "div": (6, ["What is {a} divided by {b}?", "Divide {a} by {b}."], lambda a, b: a // b),
}
SYMBOLS = {"add": "+", "double": "x", "mul": "x", "sub": "-", "div": "/"}
HALVES = [20, 30, 40, 50, 60, 70, 80, 90, 100, 6, 8, 10, 12, 14, 16, 18]


def _operands(kind: str, index: int, rng: random.Random) -> tuple[int, int]:
    if kind == "double":
        return 2, index + 1  # 2 x 2 ... 2 x 13
    if kind == "half":
        return HALVES[index - 1], 2
    if kind == "add":
        return rng.randint(2, 9), rng.randint(2, 9)
    if kind == "mul":  # 2 x b is the "double" kind
        return rng.randint(3, 9), rng.randint(3, 9)
    if kind == "sub":
        a = rng.randint(6, 18)
        return a, rng.randint(2, a - 3)
    q, b = rng.randint(2, 9), rng.randint(2, 9)
    return q * b, b


def arithmetic_cases(rng: random.Random) -> list[Case]:
    cases: list[Case] = []
    for kind, (count, forms, fn) in ARITHMETIC.items():
        seen: set[tuple[int, int]] = set()
        while len(seen) < count:
            a, b = _operands(kind, len(seen) + 1, rng)
            answer = fn(a, b)
            if (a, b) in seen or answer < 2 or answer in (a, b):
                continue
            seen.add((a, b))
            index = len(seen)
            prompt = forms[index % len(forms)].format(a=a, b=b) + " Answer with just the number."
            wrong = answer + rng.choice([-1, 1]) * rng.randint(1, 2)
            work = f"{a} / 2 = {{}}" if kind == "half" else f"{a} {SYMBOLS.get(kind)} {b} = {{}}"
            good = [
                str(answer),
                f"{answer}.",
                f"The answer is {answer}.",
                number_word(answer).capitalize(),
                work.format(answer),
            ]
            if kind in ("div", "half"):
                good.append(f"{answer}.0")
            bad = [
                str(wrong),
                f"The answer is {wrong}.",
                f"{answer}0",
                f"-{answer}",
                f"{answer}.5",
                number_word(wrong),
                work.format(wrong),
            ]
            cases.append(item("arithmetic", kind, index, prompt, [regex(number_re(answer))], good, bad))
    return cases


# --------------------------------------------------------------------------- facts
CAPITALS = [
    ("France", ["Paris"], "Lyon"),
    ("Japan", ["Tokyo"], "Osaka"),
    ("Germany", ["Berlin"], "Munich"),
    ("Italy", ["Rome"], "Milan"),
    ("Spain", ["Madrid"], "Barcelona"),
    ("the United Kingdom", ["London"], "Manchester"),
    ("Russia", ["Moscow"], "Kiev"),
    ("China", ["Beijing", "Peking"], "Shanghai"),
    ("Egypt", ["Cairo"], "Alexandria"),
    ("Greece", ["Athens"], "Sparta"),
    ("Portugal", ["Lisbon"], "Porto"),
    ("Ireland", ["Dublin"], "Cork"),
    ("Norway", ["Oslo"], "Bergen"),
    ("Austria", ["Vienna", "Wien"], "Salzburg"),
    ("Poland", ["Warsaw"], "Krakow"),
    ("Thailand", ["Bangkok"], "Phuket"),
    ("South Korea", ["Seoul"], "Busan"),
    ("India", ["New Delhi", "Delhi"], "Mumbai"),
    ("Hungary", ["Budapest"], "Vienna"),
    ("Sweden", ["Stockholm"], "Oslo"),
    ("the Netherlands", ["Amsterdam"], "Rotterdam"),
    ("Canada", ["Ottawa"], "Toronto"),
    ("Australia", ["Canberra"], "Sydney"),
    ("Argentina", ["Buenos Aires"], "Cordoba"),
]
OPPOSITES = [
    ("hot", ["cold", "cool"], "warm"),
    ("big", ["small", "little", "tiny"], "large"),
    ("up", ["down"], "top"),
    ("happy", ["sad", "unhappy"], "glad"),
    ("fast", ["slow"], "quick"),
    ("open", ["closed", "close", "shut"], "wide"),
    ("light", ["dark", "darkness", "heavy"], "bright"),
    ("old", ["young", "new"], "aged"),
    ("left", ["right"], "center"),
    ("full", ["empty"], "whole"),
    ("wet", ["dry"], "damp"),
    ("early", ["late"], "soon"),
    ("tall", ["short"], "high"),
    ("hard", ["soft", "easy"], "firm"),
]
PLURALS = [
    ("mouse", ["mice"], "mouses"),
    ("child", ["children"], "childs"),
    ("foot", ["feet"], "foots"),
    ("tooth", ["teeth"], "tooths"),
    ("man", ["men"], "mans"),
    ("woman", ["women"], "womans"),
    ("goose", ["geese"], "gooses"),
    ("box", ["boxes"], "boxs"),
    ("baby", ["babies"], "babys"),
    ("leaf", ["leaves"], "leafs"),
]
LANGUAGES = [
    ("Spain", ["Spanish", "Castilian"], "Portuguese"),
    ("France", ["French"], "German"),
    ("Germany", ["German"], "Dutch"),
    ("Italy", ["Italian"], "Spanish"),
    ("Japan", ["Japanese"], "Chinese"),
    ("China", ["Chinese", "Mandarin"], "Japanese"),
    ("Russia", ["Russian"], "Polish"),
    ("Portugal", ["Portuguese"], "Spanish"),
]
PEOPLE = [
    ("Who wrote Romeo and Juliet?", ["Shakespeare"], "Charles Dickens"),
    ("Who painted the Mona Lisa?", ["Leonardo", "da Vinci"], "Pablo Picasso"),
    ("Who was the first person to walk on the Moon?", ["Armstrong"], "Buzz Aldrin"),
    ("Who developed the theory of relativity?", ["Einstein"], "Isaac Newton"),
    ("Who wrote the play Hamlet?", ["Shakespeare"], "Christopher Marlowe"),
    ("Who discovered penicillin?", ["Fleming"], "Louis Pasteur"),
]
CURRENCIES = [
    ("Japan", ["yen"], "yuan"),
    ("the United States", ["dollar", "dollars", "USD"], "euro"),
    ("the United Kingdom", ["pound", "pounds", "sterling", "GBP"], "euro"),
    ("India", ["rupee", "rupees"], "dollar"),
    ("Mexico", ["peso", "pesos"], "dollar"),
    ("Germany", ["euro", "euros"], "mark"),
]
SCIENCE = [
    ("What is the name of Earth's natural satellite?", ["Moon"], "Mars"),
    ("What force pulls objects toward the ground?", ["gravity", "gravitation", "gravitational"], "magnetism"),
    ("What planet is known as the Red Planet?", ["Mars"], "Venus"),
    ("What is the largest planet in our solar system?", ["Jupiter"], "Saturn"),
    ("Which organ pumps blood around the body?", ["heart"], "liver"),
    ("What is the boiling point of water in degrees Celsius?", 100, 90),
    ("At how many degrees Celsius does water freeze?", 0, 10),
    ("How many days are there in a week?", 7, 5),
    ("How many months are there in a year?", 12, 10),
    ("How many hours are there in a day?", 24, 12),
    ("How many sides does a triangle have?", 3, 4),
    ("How many sides does a hexagon have?", 6, 8),
]


def facts_cases() -> list[Case]:
    cases: list[Case] = []

    def add(kind: str, index: int, prompt: str, answers, wrong) -> None:
        if isinstance(answers, int):
            check = regex(number_re(answers))
            good = [str(answers), f"{answers}.", f"The answer is {answers}.", number_word(answers).capitalize()]
            bad = [str(wrong), f"The answer is {wrong}.", number_word(wrong)]
        else:
            check = regex(words_re(*answers))
            a = answers[0]
            good = [a, f"{a}.", f"The answer is {a}.", a.lower(), a.upper()]
            bad = [wrong, f"The answer is {wrong}.", f"It is {wrong.lower()}."]
        cases.append(item("facts", kind, index, prompt, [check], good, bad))

    forms = ["What is the capital of {c}?", "What is the capital city of {c}?", "Which city is the capital of {c}?"]
    for i, (country, answers, wrong) in enumerate(CAPITALS):
        add("capital", i + 1, forms[i % 3].format(c=country), answers, wrong)
    for i, (word, answers, wrong) in enumerate(OPPOSITES):
        add("opposite", i + 1, f'What is the opposite of "{word}"?', answers, wrong)
    for i, (word, answers, wrong) in enumerate(PLURALS):
        add("plural", i + 1, f'What is the plural of "{word}"?', answers, wrong)
    for i, (country, answers, wrong) in enumerate(LANGUAGES):
        add("language", i + 1, f"What language is mainly spoken in {country}?", answers, wrong)
    for i, (question, answers, wrong) in enumerate(PEOPLE):
        add("person", i + 1, question, answers, wrong)
    for i, (country, answers, wrong) in enumerate(CURRENCIES):
        add("currency", i + 1, f"What is the currency of {country}?", answers, wrong)
    for i, (question, answers, wrong) in enumerate(SCIENCE):
        add("science", i + 1, question, answers, wrong)
    return cases


# --------------------------------------------------------------------------- output
def cases() -> list[Case]:
    """Every item with its correct and wrong sample answers, in file order."""
    rng = random.Random(SEED)
    return instruction_cases() + arithmetic_cases(rng) + facts_cases()


def items() -> list[dict]:
    return [case.item for case in cases()]


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is not up to date")
    args = parser.parse_args(argv)
    text = render(items())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python scripts/make_general_suite.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    counts = {s: sum(1 for r in items() if r["skill"] == s) for s in SKILLS}
    print(f"wrote {args.out} ({sum(counts.values())} items: {counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
