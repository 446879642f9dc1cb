"""Team-draft interleaving (Radlinski, Kurup and Joachims, 2008) for `POST /rank`.

Champion and challenger each rank the same records by score, highest first. The answer is
built in rounds, like two captains picking teams: the arm with fewer picks so far (a coin
toss when even) adds its best record not yet picked, and that record is credited to it. A
user's positive outcomes then count for the arm that placed them, so the arm whose picks do
better is preferred, on the very same requests and with no share of traffic given up.

The coin is seeded by the request id, so an answer can be reproduced from its id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mlops.names import CHALLENGER, CHAMPION


@dataclass(frozen=True)
class Interleaved:
    rows: list[int]  # the answer: positions of the records in the request, best first
    teams: list[str]  # the arm that placed each, CHAMPION or CHALLENGER
    champion_ranking: np.ndarray  # each record's rank (0 = first) by the champion's score
    challenger_ranking: np.ndarray


def request_seed(request_id: str) -> int:
    """The coin's seed: stable for a request id, across processes and runs."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


def ranking(scores: np.ndarray) -> np.ndarray:
    """Positions of the records by score, highest first; ties keep the request's order."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def ranks_of(order: np.ndarray) -> np.ndarray:
    """Each record's rank in an ordering (the inverse permutation)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def team_draft(champion_scores: np.ndarray, challenger_scores: np.ndarray, k: int, seed: int) -> Interleaved:
    """The top `k` of the team-draft interleaving of the two arms' rankings."""
    orders = {CHAMPION: ranking(champion_scores), CHALLENGER: ranking(challenger_scores)}
    n = len(orders[CHAMPION])
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be between 1 and the {n} records")
    rng = np.random.default_rng(seed)
    picked = np.zeros(n, dtype=bool)
    cursor = {CHAMPION: 0, CHALLENGER: 0}
    picks = {CHAMPION: 0, CHALLENGER: 0}
    rows: list[int] = []
    teams: list[str] = []
    while len(rows) < k:
        if picks[CHAMPION] != picks[CHALLENGER]:
            arm = CHAMPION if picks[CHAMPION] < picks[CHALLENGER] else CHALLENGER
        else:
            arm = CHAMPION if rng.random() < 0.5 else CHALLENGER
        order = orders[arm]
        while picked[order[cursor[arm]]]:  # its best record the other arm has not taken
            cursor[arm] += 1
        row = int(order[cursor[arm]])
        picked[row] = True
        rows.append(row)
        teams.append(arm)
        picks[arm] += 1
    return Interleaved(rows, teams, ranks_of(orders[CHAMPION]), ranks_of(orders[CHALLENGER]))
