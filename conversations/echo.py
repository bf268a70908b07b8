"""Anti-echo: does a new reply repeat one of the conversation's recent replies?

Exact repeats are found by the normalized SHA-256; near repeats by the Jaccard similarity
of word 3-shingles (the sets of consecutive word triples), which ignores small edits but
not a different answer built from the same words.
"""

from dataclasses import dataclass

from conversations.models import normalize_text, text_digest

SHINGLE_SIZE = 3


@dataclass(frozen=True)
class EchoMatch:
    similar_to: int  # the turn number it repeats
    score: float


def shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = normalize_text(text).split()
    if len(words) < SHINGLE_SIZE:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i : i + SHINGLE_SIZE]) for i in range(len(words) - 2))


def similarity(a: str, b: str) -> float:
    return _jaccard(shingles(a), shingles(b))


def _jaccard(sa: frozenset, sb: frozenset) -> float:
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def find_echo(
    *, replies: list[tuple[int, str, str]], output: str, threshold: float
) -> EchoMatch | None:
    """The most similar of `replies` [(turn number, reply, its hash)], if at or above
    `threshold`. The caller passes the conversation's recent completed replies."""
    digest, mine = text_digest(output), shingles(output)
    best: EchoMatch | None = None
    for number, previous, previous_hash in replies:
        score = 1.0 if previous_hash == digest else _jaccard(mine, shingles(previous))
        if score >= threshold and (best is None or score > best.score):
            best = EchoMatch(similar_to=number, score=round(score, 4))
    return best
