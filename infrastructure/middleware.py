import time

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from infrastructure.request_id import HEADER, bind_request_id, resolve_request_id

log = structlog.get_logger("orchestra.http")


class RequestIdMiddleware:
    """Assigns the request id, binds it to every log line, returns it on the response,
    and writes one access line per request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        started = self._start(request)
        response = self.get_response(request)
        return self._finish(request, response, started)

    async def _acall(self, request):
        started = self._start(request)
        response = await self.get_response(request)
        return self._finish(request, response, started)

    @staticmethod
    def _start(request) -> float:
        request.request_id = resolve_request_id(request.headers.get(HEADER))
        bind_request_id(request.request_id)
        return time.perf_counter()

    @staticmethod
    def _finish(request, response, started: float):
        response[HEADER] = request.request_id
        log.info(
            "request.finished",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response
