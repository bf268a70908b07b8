"""infrastructure/prefer.py: the `wait` preference of the Prefer header (RFC 7240)."""

import pytest

from infrastructure.prefer import preferred_wait


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 0),
        ("", 0),
        ("wait=5", 5),
        ("WAIT = 7", 7),
        ('wait="9"', 9),
        ("respond-async, wait=5", 5),
        ("wait=5; unit=s", 5),
        ("wait=5, wait=9", 5),  # only the first counts
        ("wait=600", 60),  # at most 60
        ("wait=0", 0),
        ("return=minimal", 0),
        ('note="a,wait=5"', 0),  # inside a quoted string: not a preference
        ('note="a,wait=5", wait=3', 3),
    ],
)
def test_the_wait_preference_is_read_and_the_others_ignored(header, seconds):
    assert preferred_wait(header) == seconds


@pytest.mark.parametrize(
    "header", ["wait=soon", "wait=1.5", "wait=-1", "wait=", "wait", 'wait="x"', "wait=\uff15"]
)
def test_a_wait_that_is_not_whole_seconds_is_refused(header):
    with pytest.raises(ValueError, match="wait must be a whole number of seconds"):
        preferred_wait(header)
