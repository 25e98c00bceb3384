"""Choosing the examples a prompt-only contender sees: always from the TRAIN split.

Two ways, two rungs of the prompt ladder:

- static: the same k examples for every case, spread over labels (round-robin over the
  sorted labels, each label's records in file order). Deterministic and cheap: the prefix
  is shared by every case.
- retrieved: for each case the k train examples whose user turn is most similar to the
  case's (TF-IDF over word 1-2 grams, cosine similarity; scikit-learn). With many labels a
  fixed handful cannot cover them, while the nearest neighbours usually carry the right one:
  the cheapest lever a team should pull before paying for training.

The index is built from the records it is given (the train split) and nothing else, so a
held-out case can never be retrieved as its own example."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pipelines.data.records import turn
from pipelines.evaluation.task import label_of


def usable(records: list[dict]) -> list[dict]:
    """Records that can serve as an example: a user turn and an assistant answer."""
    return [r for r in records if turn(r, "user", None) is not None and turn(r, "assistant", None) is not None]


def select_static(train: list[dict], k: int) -> list[dict]:
    """k examples spread over labels. Covering several labels matters: with one label the
    small model copies it."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for record in usable(train):
        by_label[label_of(record)].append(record)
    chosen: list[dict] = []
    queues = [list(by_label[label]) for label in sorted(by_label)]
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return chosen


@dataclass
class Retriever:
    """k nearest train examples by TF-IDF cosine similarity of the user turns."""

    train: list[dict]
    _vectorizer: Any = field(default=None, repr=False)
    _matrix: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.train = usable(self.train)
        if not self.train:
            raise ValueError("no train records with a user and an assistant turn to retrieve from")
        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
        self._matrix = self._vectorizer.fit_transform([turn(r, "user") for r in self.train])

    def nearest(self, queries: list[str], k: int) -> list[list[dict]]:
        """For each query, the k most similar train records, most similar LAST (nearest the
        question in the prompt); ties go to the earlier train record, so it is deterministic."""
        import numpy as np

        if k <= 0:
            return [[] for _ in queries]
        scores = (self._vectorizer.transform(queries) @ self._matrix.T).toarray()
        k = min(k, len(self.train))
        out = []
        for row in scores:
            order = np.lexsort((np.arange(len(row)), -row))[:k]  # best first, then by index
            out.append([self.train[i] for i in reversed(order.tolist())])
        return out
