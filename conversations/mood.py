"""The customer's mood: VADER's compound sentiment of each input (-1 to 1, lexicon-based,
no network), folded into a moving average per conversation."""

from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Weight of the newest message in the moving average.
MOOD_WEIGHT = 0.5
# What the scorer reads of a message: plenty for its mood, and a bound on the work any
# input can cause (VADER's time grows with the square of a text's emoji: 8,000 took 20 s).
SCORED_CHARS = 2000
SCORED_EMOJI = 100


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    return round(_analyzer().polarity_scores(_scored_part(text))["compound"], 4)


def _scored_part(text: str) -> str:
    """The first SCORED_CHARS characters, emoji past the first SCORED_EMOJI made spaces."""
    emojis = _analyzer().emojis
    kept, seen = [], 0
    for char in text[:SCORED_CHARS]:
        if char in emojis:
            seen += 1
            if seen > SCORED_EMOJI:
                char = " "
        kept.append(char)
    return "".join(kept)


def next_mood(previous: float | None, score: float) -> float:
    if previous is None:
        return score
    return round((1 - MOOD_WEIGHT) * previous + MOOD_WEIGHT * score, 4)
