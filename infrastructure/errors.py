"""Domain errors: what went wrong, as a stable code, a message and details.

Services raise them and know nothing of HTTP; the edges map the codes to an HTTP status
(infrastructure/api_errors.py) or a WebSocket `error` frame. The codes are those of
docs/api.md.
"""


class DomainError(Exception):
    code = "validation_error"
    default_message = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: dict | None = None):
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)


class InvalidInput(DomainError):
    """Bad input; `details` names the fields: {"field": ["what is wrong", …]}."""


class NotFound(DomainError):
    code = "not_found"
    default_message = "Not found."


class Forbidden(DomainError):
    code = "forbidden"
    default_message = "You may not do this."


class ConversationBusy(DomainError):
    code = "conversation_busy"
    default_message = "Another turn of this conversation is still running."


class ConversationClosed(DomainError):
    code = "conversation_closed"
    default_message = "This conversation does not take new turns."


class IdempotencyMismatch(DomainError):
    code = "idempotency_mismatch"
    default_message = "This turn_id was already used with a different text."


class BudgetExceeded(DomainError):
    code = "budget_exceeded"
    default_message = "A hard budget would be exceeded."


class ProviderUnavailable(DomainError):
    code = "provider_unavailable"
    default_message = "No model of this agent is available right now."


class DependencyUnavailable(DomainError):
    code = "dependency_unavailable"
    default_message = "A service Orchestra depends on is unavailable."
