"""Generate the demo dataset: support tickets -> strict JSON {"category", "priority"}.

Seeded and deterministic (re-running rewrites identical files). The category and priority
are inferable from cues in the ticket text, which is what a small model can learn in one
epoch. Every data-stage rule shows up: exact duplicates (verbatim and after normalisation),
near duplicates (small edits), conflicting answers, cross-source copies and malformed rows.

    python scripts/make_demo_data.py   # writes data/demo/tickets.jsonl and data/demo/partner.csv
                                       # and the second example task's examples/intent/intents.csv

The second example task (``examples/intent/``) is a plain-label intent task: a CSV of
``text,intent`` rows, the most common labelled data there is, scored as ``output.type:
label``. Its intents are ``<topic>_<action>`` (e.g. ``card_fee``); the text names the topic
and the action, so a small model can learn it. ``--intents-only --rows N --labels L --out DIR``
writes a larger one of the same kind (the ~10k rows / ~80 labels scale check) with its own
sources and task spec, not the shipped example.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "data" / "demo"
INTENT_OUT = REPO / "examples" / "intent"
CATEGORIES = ("billing", "technical", "account", "shipping", "refund")
PRIORITIES = ("low", "medium", "high", "urgent")

ISSUES = {
    "billing": [
        "I was charged twice for my {plan} plan this month.",
        "Invoice {invoice} shows {amount} but my plan costs less.",
        "The {plan} subscription price went up without any notice on my bill.",
        "My card was billed {amount} on {day} and I don't recognise the charge.",
        "I need invoice {invoice} reissued with our company VAT number.",
        "Why does my latest bill include an extra fee of {amount}?",
        "Please switch my billing from monthly to yearly on the {plan} plan.",
    ],
    "technical": [
        "The {app} app crashes every time I open the {feature} screen.",
        "I get error {code} when I try to {action}.",
        "The {feature} page won't load on my {device}.",
        "Sync between my {device} and the website stopped working after the update.",
        "The {app} app freezes when I tap {feature}.",
        "Uploading a file fails with error {code} on my {device}.",
        "Notifications stopped working in the {app} app on my {device}.",
    ],
    "account": [
        "I can't log in to my account, it says the password is wrong.",
        "The password reset email never arrives at {email}.",
        "Please change the email address on my account to {email}.",
        "My account got locked after too many login attempts.",
        "How do I turn on two-factor authentication for my account?",
        "I want to close my account and remove my profile.",
        "Please add {name} as a second user on my account.",
    ],
    "shipping": [
        "My order {order} still hasn't arrived.",
        "Tracking for order {order} hasn't updated in {days} days.",
        "The courier delivered order {order} to the wrong address.",
        "Can I change the delivery address for order {order}?",
        "The parcel for order {order} was marked delivered but it is not here.",
        "Order {order} shipped to {city} instead of my home town.",
        "When will order {order} be dispatched? It still says processing.",
    ],
    "refund": [
        "I returned the {item} {days} days ago and still have no refund.",
        "I want my money back for order {order}.",
        "The {item} arrived broken, please refund it.",
        "I cancelled during the trial and want the {amount} refunded.",
        "Where is the refund you promised for order {order}?",
        "Please refund the {item}, it is not what I ordered.",
        "The refund of {amount} for my returned {item} has not reached my card.",
    ],
}
CUES = {
    "low": [
        "No rush, whenever you get a chance.",
        "Just curious, it's not urgent at all.",
        "This can wait until next week.",
        "Low priority, answer when convenient.",
    ],
    "medium": [
        "Could you look into it this week?",
        "I'd like this sorted out soon.",
        "Please get back to me in the next few days.",
        "Would be good to fix it before the end of the week.",
    ],
    "high": [
        "I need this fixed today.",
        "This is blocking my work, please prioritise it.",
        "Please treat this as high priority.",
        "It's stopping me from working, please help today.",
    ],
    "urgent": [
        "URGENT: our whole team is down right now!",
        "Please help immediately, we are losing sales every minute.",
        "This is an emergency, I need it resolved right now!",
        "Critical: all our customers are affected, respond ASAP!",
    ],
}
OPENERS = ["Hi,", "Hello support,", "Hey team,", "Good morning,", "Hello,", ""]
DETAILS = [
    "I already tried restarting.",
    "My customer number is {customer}.",
    "I'm on the {plan} plan.",
    "I've been a customer for {years} years.",
    "This happened on {day}.",
    "",
    "",
    "",
]
CLOSERS = ["Thanks.", "Thank you!", "Regards, {name}.", "Cheers, {name}.", "", ""]
SLOTS = {
    "plan": ["Basic", "Pro", "Team", "Enterprise", "Family", "Starter"],
    "app": ["iOS", "Android", "desktop", "web", "Mac"],
    "feature": ["settings", "reports", "dashboard", "calendar", "inbox", "checkout", "profile"],
    "action": [
        "export a report",
        "save my changes",
        "upload a photo",
        "connect my bank",
        "print a label",
        "share a folder",
    ],
    "device": ["iPhone", "Android phone", "laptop", "tablet", "Chromebook", "work PC"],
    "item": ["headphones", "jacket", "blender", "phone case", "desk lamp", "backpack", "kettle"],
    "city": ["Leeds", "Porto", "Lyon", "Graz", "Utrecht", "Malmo"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend"],
    "name": ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goran", "Hana", "Ivo", "Jude"],
}
SYSTEM_PROMPT = (
    'Classify the support ticket. Reply with only a JSON object: {"category": '
    '"billing|technical|account|shipping|refund", "priority": "low|medium|high|urgent"}'
)


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in SLOTS.items()}
    values.update(
        invoice=f"INV-{rng.randint(10000, 99999)}",
        order=f"#{rng.randint(100000, 999999)}",
        amount=f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        code=f"E{rng.randint(100, 999)}",
        days=rng.randint(3, 30),
        customer=f"C{rng.randint(1000, 99999)}",
        years=rng.randint(2, 12),
        email=f"{rng.choice(SLOTS['name']).lower()}{rng.randint(1, 999)}@example.com",
    )
    return template.format(**values)


def ticket(rng: random.Random) -> tuple[str, str, str]:
    """(text, category, priority); the issue sentence carries the category, the cue the priority."""
    category, priority = rng.choice(CATEGORIES), rng.choices(PRIORITIES, weights=(2, 4, 3, 2))[0]
    parts = [
        rng.choice(OPENERS),
        _fill(rng.choice(ISSUES[category]), rng),
        _fill(rng.choice(DETAILS), rng),
        rng.choice(CUES[priority]),
        _fill(rng.choice(CLOSERS), rng),
    ]
    if rng.random() < 0.3:  # cue first sometimes, so position is not the signal
        parts[1], parts[3] = parts[3], parts[1]
    return " ".join(p for p in parts if p), category, priority


def answer(category: str, priority: str) -> str:
    return json.dumps({"category": category, "priority": priority})


def near_edit(text: str, rng: random.Random) -> str:
    """A small edit that keeps word-shingle Jaccard high: punctuation, or a short tail."""
    edits = [
        lambda t: t.replace(".", "!", 1) if "." in t else t + "!",
        lambda t: t.rstrip(".!") + ". Thanks again.",
        lambda t: t + " Any update?",
        lambda t: t.replace(",", "", 1) + " Please reply.",
    ]
    return rng.choice(edits)(text)


def exact_variant(text: str, rng: random.Random) -> str:
    """Equal after normalisation (case / whitespace / full-width), different as bytes."""
    return rng.choice([lambda t: t, str.upper, lambda t: t.replace(" ", "  "), lambda t: " " + t + "\t"])(text)


def build(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Clean rows for both sources, with planted duplicates and conflicts. Each copy lands
    after its original (a re-sent ticket comes later), so keep-first keeps the original."""
    jsonl = [dict(zip(("text", "category", "priority"), ticket(rng))) for _ in range(360)]
    partner = [dict(zip(("text", "category", "priority"), ticket(rng))) for _ in range(190)]
    cross = [dict(r) for r in rng.sample(jsonl, 6)]  # cross-source copies
    for rows, exact, near, conflicts in ((jsonl, 18, 20, 4), (partner, 8, 12, 3)):
        copies = [(r, {**r, "text": exact_variant(r["text"], rng)}) for r in rng.sample(rows, exact)]
        copies += [(r, {**r, "text": near_edit(r["text"], rng)}) for r in rng.sample(rows, near)]
        copies += [
            (r, {**r, "priority": rng.choice([p for p in PRIORITIES if p != r["priority"]])})
            for r in rng.sample(rows, conflicts)
        ]  # same ticket, different priority: label noise
        for original, copy in copies:
            after = next(i for i, row in enumerate(rows) if row is original)
            rows.insert(rng.randint(after + 1, len(rows)), copy)
    partner += cross
    return jsonl, partner


def write_jsonl(rows: list[dict], rng: random.Random) -> bytes:
    lines = []
    for i, r in enumerate(rows):
        messages = [
            {"role": "user", "content": r["text"]},
            {"role": "assistant", "content": answer(r["category"], r["priority"])},
        ]
        if i % 10 == 0:  # some rows carry the system turn themselves: same prompt, same format
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        lines.append(
            json.dumps(
                {"ticket_id": f"T-{10000 + i}", "channel": rng.choice(["email", "chat", "web"]), "messages": messages}
            ).encode()
        )

    def good(text: str, ans: str) -> bytes:
        messages = [{"role": "user", "content": text}, {"role": "assistant", "content": ans}]
        return json.dumps({"ticket_id": "T-bad", "messages": messages}).encode()

    malformed = [
        b'{"ticket_id": "T-bad", "messages": [{"role": "user", "content": "My order #1 is',  # invalid JSON
        good("Mon colis est arriv\u00e9 ab\u00eem\u00e9", answer("shipping", "high")).replace(
            b"\\u00e9", b"\xe9"
        ),  # latin-1 bytes: invalid UTF-8
        good("   ", answer("billing", "low")),  # empty content
        json.dumps(
            {
                "ticket_id": "T-bad",
                "messages": [  # wrong role order
                    {"role": "assistant", "content": answer("account", "low")},
                    {"role": "user", "content": "I can't log in to my account."},
                ],
            }
        ).encode(),
        json.dumps({"ticket_id": "T-bad", "text": "Refund please", "answer": "refund"}).encode(),  # no messages
        good(
            "Please help. " + "My dashboard shows an error again and again. " * 100, answer("technical", "high")
        ),  # over the length limit
        json.dumps(
            {
                "ticket_id": "T-bad",
                "messages": [  # non-string content
                    {"role": "user", "content": 404},
                    {"role": "assistant", "content": answer("technical", "low")},
                ],
            }
        ).encode(),
        good("The app is slow on my laptop.", "technical, medium"),  # answer has no category key
    ]
    for offset, line in zip((17, 60, 111, 150, 203, 250, 299, 350), malformed):
        lines.insert(offset, line)
    return b"\n".join(lines) + b"\n"


def write_csv(rows: list[dict]) -> str:
    table = [
        {"case_id": f"P-{5000 + i}", "text": r["text"], "answer": answer(r["category"], r["priority"])}
        for i, r in enumerate(rows)
    ]
    table.insert(31, {"case_id": "P-bad1", "text": "", "answer": answer("billing", "medium")})  # empty
    table.insert(77, {"case_id": "P-bad2", "text": "Where is my parcel?", "answer": ""})  # empty answer
    table.insert(120, {"case_id": "P-bad3", "text": "Too long. " * 450, "answer": answer("refund", "low")})
    table.insert(170, {"case_id": "P-bad4", "text": "Please call me back.", "answer": '{"priority": "low"}'})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "text", "answer"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the intent task
INTENT_TOPICS = {  # topic -> ways a customer names it
    "card": ["my card", "my debit card", "the bank card"],
    "transfer": ["a transfer", "my bank transfer", "the payment I sent"],
    "account": ["my account", "my current account", "the joint account"],
    "loan": ["my loan", "the personal loan", "my car loan"],
    "savings": ["my savings account", "the savings pot", "my ISA"],
    "app": ["the mobile app", "the banking app", "the app on my phone"],
    "statement": ["my statement", "the monthly statement", "my e-statement"],
    "mortgage": ["my mortgage", "the home loan", "my mortgage offer"],
    "cheque": ["a cheque", "the cheque I paid in", "my cheque book"],
    "pin": ["my PIN", "the card PIN", "my PIN code"],
}
INTENT_ACTIONS = {  # action -> templates with {thing}
    "status": [
        "What is the status of {thing}?",
        "Any update on {thing}? I have been waiting {days} days.",
        "Where is {thing} at right now?",
        "Can you check how {thing} is progressing?",
    ],
    "fee": [
        "Why was I charged a fee of {amount} for {thing}?",
        "What does {thing} cost per month?",
        "There is a {amount} charge on {thing} I don't understand.",
        "Are there any fees for {thing}?",
    ],
    "cancel": [
        "Please cancel {thing}.",
        "I want to close {thing} today.",
        "How do I stop {thing} for good?",
        "Cancel {thing}, I no longer need it.",
    ],
    "limit": [
        "Can you raise the limit on {thing}?",
        "What is the daily limit for {thing}?",
        "I hit the limit on {thing} at {amount}.",
        "Please lower the limit of {thing} to {amount}.",
    ],
    "open": [
        "I'd like to open {thing}.",
        "How do I apply for {thing}?",
        "Can I set up {thing} online?",
        "Start an application for {thing} please.",
    ],
    "problem": [
        "Something is wrong with {thing}, it keeps failing.",
        "{thing} is not working since {day}.",
        "I get an error with {thing} every time.",
        "{thing} stopped working this morning.",
    ],
    "change": [
        "I need to change the details on {thing}.",
        "Please update the name on {thing}.",
        "Can I switch {thing} to a different address?",
        "How do I edit {thing}?",
    ],
    "fraud": [
        "I think someone used {thing} without my permission.",
        "There is a payment on {thing} I did not make.",
        "Please block {thing}, it may be compromised.",
        "I see suspicious activity on {thing}.",
    ],
}
INTENT_OPENERS = ["Hi,", "Hello,", "Good morning,", "Hey,", "", "", ""]
INTENT_CLOSERS = ["Thanks.", "Thank you!", "Cheers, {name}.", "Regards, {name}.", "", "", ""]
INTENT_SYSTEM = "Name the customer's intent. Reply with only the intent, e.g. card_fee."


def intent_labels(n_labels: int) -> list[str]:
    """The first ``n_labels`` ``<topic>_<action>`` intents, spread over topics and actions."""
    combos = sorted(
        ((t, a) for t in range(len(INTENT_TOPICS)) for a in range(len(INTENT_ACTIONS))), key=lambda ta: (max(ta), ta)
    )  # 3x3 topics x actions first, then 4x4, ...
    if not 2 <= n_labels <= len(combos):
        raise SystemExit(f"--labels must be 2..{len(combos)}")
    topics, actions = list(INTENT_TOPICS), list(INTENT_ACTIONS)
    return [f"{topics[t]}_{actions[a]}" for t, a in combos[:n_labels]]


def intent_row(label: str, rng: random.Random) -> dict:
    topic, action = label.split("_", 1)
    body = rng.choice(INTENT_ACTIONS[action]).format(
        thing=rng.choice(INTENT_TOPICS[topic]),
        days=rng.randint(2, 30),
        day=rng.choice(SLOTS["day"]),
        amount=f"${rng.randint(5, 900)}.{rng.randint(0, 99):02d}",
    )
    parts = [
        rng.choice(INTENT_OPENERS),
        body[0].upper() + body[1:],
        _fill(rng.choice(DETAILS), rng),
        rng.choice(INTENT_CLOSERS).format(name=rng.choice(SLOTS["name"])),
    ]
    return {"text": " ".join(p for p in parts if p), "intent": label}


def intents_csv(n_rows: int, labels: list[str], rng: random.Random) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["text", "intent"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(intent_row(labels[i % len(labels)], rng) for i in range(n_rows))
    return buffer.getvalue()


def intent_task(labels: list[str], name: str) -> dict:
    """The task spec of an intent task: the strong prompt lists every intent."""
    listing = "\n".join(f"- {label}" for label in labels)
    return {
        "name": name,
        "system_prompt": (
            f"You route customer messages at a bank. Choose exactly one intent:\n{listing}\n"
            "Reply with only the intent name, exactly as written above: no other text."
        ),
        "output": {"type": "label"},  # the closed set: every answer of the train split
        "max_new_tokens": 12,
        "target_pass_rate": 0.9,
    }


def intent_sources(csv_name: str, source: str) -> dict:
    return {
        "sources": [
            {
                "name": source,
                "kind": "csv",
                "path": csv_name,
                "description": "Customer messages labelled with one intent (text,intent).",
                "fields": {"user": "text", "assistant": "intent"},
                "label": "intent",
                "system_prompt": INTENT_SYSTEM,
            }
        ]
    }


class _BlockDumper(yaml.SafeDumper):
    """safe_dump, with multi-line strings (the strong prompt) as readable ``|`` blocks."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None),
)


def write_intent_task(out: Path, n_rows: int, n_labels: int, seed: int, name: str) -> None:
    """A whole intent task in ``out``: the CSV, sources.yaml, task.yaml and tunegate.yaml."""
    labels = intent_labels(n_labels)
    out.mkdir(parents=True, exist_ok=True)
    (out / "intents.csv").write_text(intents_csv(n_rows, labels, random.Random(seed)), encoding="utf-8")
    folder = out.resolve().relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    header = (
        f"# Generated by scripts/make_demo_data.py: {name}, a plain-label intent task ({n_rows} rows,\n"
        f"# {n_labels} intents). NOT the default demo; run it with its three files:\n"
        f"#   TUNEGATE_SOURCES={folder}/sources.yaml TUNEGATE_SETTINGS={folder}/tunegate.yaml \\\n"
        f"#   TUNEGATE_HOME=.tunegate-{name} make data   (or make demo)\n"
    )
    dump = lambda doc: header + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)  # noqa: E731
    (out / "sources.yaml").write_text(dump(intent_sources("intents.csv", name)))
    (out / "task.yaml").write_text(dump(intent_task(labels, name)))
    try:
        task_file = (out / "task.yaml").resolve().relative_to(REPO)
    except ValueError:
        task_file = (out / "task.yaml").resolve()
    (out / "tunegate.yaml").write_text(dump({"eval": {"task_file": str(task_file)}}))
    print(f"wrote {n_rows} rows ({n_labels} intents) and sources.yaml, task.yaml, tunegate.yaml to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the demo data sets.")
    parser.add_argument("--intents-only", action="store_true", help="only an intent task, into --out")
    parser.add_argument("--rows", type=int, default=480, help="intent rows (with --intents-only)")
    parser.add_argument("--labels", type=int, default=12, help="distinct intents (with --intents-only)")
    parser.add_argument("--out", type=Path, default=None, help="folder of the intent task (with --intents-only)")
    args = parser.parse_args(argv)
    if args.intents_only:
        if args.out is None:
            raise SystemExit("--intents-only needs --out DIR (the shipped example is written without it)")
        write_intent_task(args.out, args.rows, args.labels, seed=20260101, name=f"intent_{args.labels}")
        return
    rng = random.Random(20240601)
    jsonl, partner = build(rng)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tickets.jsonl").write_bytes(write_jsonl(jsonl, rng))
    (OUT / "partner.csv").write_text(write_csv(partner), encoding="utf-8")
    print(f"wrote {len(jsonl) + 8} rows to tickets.jsonl, {len(partner) + 4} rows to partner.csv in {OUT}")
    write_intent_task(INTENT_OUT, 480, 12, seed=20260101, name="intent_example")


if __name__ == "__main__":
    main()
