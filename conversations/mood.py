"""The customer's mood: VADER's compound sentiment of each input (-1 to 1, lexicon-based,
no network), folded into a moving average per conversation."""

from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Weight of the newest message in the moving average.
MOOD_WEIGHT = 0.5


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float:
    return round(_analyzer().polarity_scores(text)["compound"], 4)


def next_mood(previous: float | None, score: float) -> float:
    if previous is None:
        return score
    return round((1 - MOOD_WEIGHT) * previous + MOOD_WEIGHT * score, 4)
