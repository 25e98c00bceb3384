"""Generate the demo dataset: support tickets -> strict JSON {"category", "priority"}.

Seeded and deterministic (re-running rewrites identical files). The category and priority
are inferable from cues in the ticket text, which is what a small model can learn in one
epoch. Every data-stage rule shows up: exact duplicates (verbatim and after normalisation),
near duplicates (small edits), conflicting answers, cross-source copies and malformed rows.

    python scripts/make_demo_data.py   # writes data/demo/tickets.jsonl and data/demo/partner.csv
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "demo"
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
    "I already tried restarting.", "My customer number is {customer}.", "I'm on the {plan} plan.",
    "I've been a customer for {years} years.", "This happened on {day}.", "", "", "",
]
CLOSERS = ["Thanks.", "Thank you!", "Regards, {name}.", "Cheers, {name}.", "", ""]
SLOTS = {
    "plan": ["Basic", "Pro", "Team", "Enterprise", "Family", "Starter"],
    "app": ["iOS", "Android", "desktop", "web", "Mac"],
    "feature": ["settings", "reports", "dashboard", "calendar", "inbox", "checkout", "profile"],
    "action": ["export a report", "save my changes", "upload a photo", "connect my bank",
               "print a label", "share a folder"],
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
        invoice=f"INV-{rng.randint(10000, 99999)}", order=f"#{rng.randint(100000, 999999)}",
        amount=f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}", code=f"E{rng.randint(100, 999)}",
        days=rng.randint(3, 30), customer=f"C{rng.randint(1000, 99999)}", years=rng.randint(2, 12),
        email=f"{rng.choice(SLOTS['name']).lower()}{rng.randint(1, 999)}@example.com",
    )
    return template.format(**values)


def ticket(rng: random.Random) -> tuple[str, str, str]:
    """(text, category, priority); the issue sentence carries the category, the cue the priority."""
    category, priority = rng.choice(CATEGORIES), rng.choices(PRIORITIES, weights=(2, 4, 3, 2))[0]
    parts = [rng.choice(OPENERS), _fill(rng.choice(ISSUES[category]), rng),
             _fill(rng.choice(DETAILS), rng), rng.choice(CUES[priority]), _fill(rng.choice(CLOSERS), rng)]
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
        copies += [(r, {**r, "priority": rng.choice([p for p in PRIORITIES if p != r["priority"]])})
                   for r in rng.sample(rows, conflicts)]  # same ticket, different priority: label noise
        for original, copy in copies:
            after = next(i for i, row in enumerate(rows) if row is original)
            rows.insert(rng.randint(after + 1, len(rows)), copy)
    partner += cross
    return jsonl, partner


def write_jsonl(rows: list[dict], rng: random.Random) -> bytes:
    lines = []
    for i, r in enumerate(rows):
        messages = [{"role": "user", "content": r["text"]},
                    {"role": "assistant", "content": answer(r["category"], r["priority"])}]
        if i % 10 == 0:  # some rows carry the system turn themselves: same prompt, same format
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        lines.append(json.dumps({"ticket_id": f"T-{10000 + i}", "channel": rng.choice(["email", "chat", "web"]),
                                 "messages": messages}).encode())
    good = lambda text, ans: json.dumps({"ticket_id": "T-bad", "messages": [  # noqa: E731
        {"role": "user", "content": text}, {"role": "assistant", "content": ans}]}).encode()
    malformed = [
        b'{"ticket_id": "T-bad", "messages": [{"role": "user", "content": "My order #1 is',  # invalid JSON
        good("Mon colis est arriv\u00e9 ab\u00eem\u00e9", answer("shipping", "high")).replace(
            "\\u00e9".encode(), b"\xe9"),  # latin-1 bytes: invalid UTF-8
        good("   ", answer("billing", "low")),  # empty content
        json.dumps({"ticket_id": "T-bad", "messages": [  # wrong role order
            {"role": "assistant", "content": answer("account", "low")},
            {"role": "user", "content": "I can't log in to my account."}]}).encode(),
        json.dumps({"ticket_id": "T-bad", "text": "Refund please", "answer": "refund"}).encode(),  # no messages
        good("Please help. " + "My dashboard shows an error again and again. " * 100,
             answer("technical", "high")),  # over the length limit
        json.dumps({"ticket_id": "T-bad", "messages": [  # non-string content
            {"role": "user", "content": 404}, {"role": "assistant", "content": answer("technical", "low")}]}).encode(),
        good("The app is slow on my laptop.", "technical, medium"),  # answer has no category key
    ]
    for offset, line in zip((17, 60, 111, 150, 203, 250, 299, 350), malformed):
        lines.insert(offset, line)
    return b"\n".join(lines) + b"\n"


def write_csv(rows: list[dict]) -> str:
    table = [{"case_id": f"P-{5000 + i}", "text": r["text"], "answer": answer(r["category"], r["priority"])}
             for i, r in enumerate(rows)]
    table.insert(31, {"case_id": "P-bad1", "text": "", "answer": answer("billing", "medium")})  # empty
    table.insert(77, {"case_id": "P-bad2", "text": "Where is my parcel?", "answer": ""})  # empty answer
    table.insert(120, {"case_id": "P-bad3", "text": "Too long. " * 450, "answer": answer("refund", "low")})
    table.insert(170, {"case_id": "P-bad4", "text": "Please call me back.", "answer": '{"priority": "low"}'})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case_id", "text", "answer"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buffer.getvalue()


def main() -> None:
    rng = random.Random(20240601)
    jsonl, partner = build(rng)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tickets.jsonl").write_bytes(write_jsonl(jsonl, rng))
    (OUT / "partner.csv").write_text(write_csv(partner), encoding="utf-8")
    print(f"wrote {len(jsonl) + 8} rows to tickets.jsonl, {len(partner) + 4} rows to partner.csv in {OUT}")


if __name__ == "__main__":
    main()
