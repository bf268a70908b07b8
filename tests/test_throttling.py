"""access/throttling.py: DRF's sliding-window rates, kept in Redis atomically."""

import threading
from types import SimpleNamespace

from django.conf import settings

from access.throttling import RedisUserRateThrottle


class TwoPerMinute(RedisUserRateThrottle):
    rate = "2/minute"


class FivePerMinute(RedisUserRateThrottle):
    rate = "5/minute"


def _request(user_pk: int = 7):
    return SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=user_pk))


def _allowed_at(now: float, throttle_class=TwoPerMinute, user_pk: int = 7):
    throttle = throttle_class()
    throttle.timer = lambda: now
    return throttle.allow_request(_request(user_pk), None), throttle


def test_the_full_stack_uses_the_redis_throttles():
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] == [
        "access.throttling.RedisAnonRateThrottle",
        "access.throttling.RedisUserRateThrottle",
    ]


def test_a_sliding_window_that_does_not_count_refused_requests():
    start = 1_795_000_000.0
    assert _allowed_at(start)[0] is True
    assert _allowed_at(start + 10)[0] is True

    allowed, refused = _allowed_at(start + 20)
    assert allowed is False
    assert refused.wait() == 40.0  # until the first request leaves the window

    # a minute after the first request one slot is free: the refusal took none
    assert _allowed_at(start + 60.5)[0] is True
    assert _allowed_at(start + 61)[0] is False
    assert _allowed_at(start + 61, user_pk=8)[0] is True  # each user has a window


def test_concurrent_requests_of_one_user_are_all_counted():
    """Twenty requests at once against five a minute: exactly five pass."""
    barrier = threading.Barrier(20)
    answers: list[bool] = []

    def call():
        throttle = FivePerMinute()
        barrier.wait()
        answers.append(throttle.allow_request(_request(), None))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == [False] * 15 + [True] * 5


def test_a_rate_of_zero_refuses_every_request_for_the_whole_window():
    class NonePerMinute(RedisUserRateThrottle):
        rate = "0/minute"

    allowed, throttle = _allowed_at(1_795_000_000.0, NonePerMinute)

    assert allowed is False
    assert throttle.wait() == 60
