import os
import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from agents import secrets
from agents.providers.base import ProviderConfig
from agents.tools.registry import registered

# Only variables named for the purpose: a provider must not be able to read SECRET_KEY,
# DATABASE_URL or any other secret of the process and send it to a server of its choice.
ENV_NAME = RegexValidator(
    r"^[A-Z][A-Z0-9_]*_API_KEY$",
    "An environment variable whose name ends in _API_KEY, e.g. OPENAI_API_KEY.",
)
# Temperature each provider kind accepts.
TEMPERATURE_RANGE = {"openai": (0.0, 2.0), "anthropic": (0.0, 1.0), "local": (0.0, 2.0)}


class Provider(models.Model):
    """Where models are served: an OpenAI-compatible server, Anthropic, or the built-in
    local model. The API key is stored encrypted or read from a named environment
    variable; it is never displayed."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"
        LOCAL = "local", "Built-in local model"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_url = models.URLField(
        blank=True, help_text="For OpenAI-compatible servers (vLLM, Ollama …), e.g. http://host/v1"
    )
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_env = models.CharField(
        "API key environment variable",
        max_length=100,
        blank=True,
        validators=[ENV_NAME],
        help_text="Read the key from this variable instead of storing it.",
    )
    connect_timeout_s = models.FloatField(
        "connect timeout (s)",
        default=5.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(60)],
    )
    read_timeout_s = models.FloatField(
        "read timeout (s)",
        default=60.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(600)],
    )
    max_retries = models.PositiveSmallIntegerField(
        default=3, validators=[MaxValueValidator(5)], help_text="Retries of a failed call (0 to 5)."
    )
    # Defaults: one turn against a dead server (1 + 3 attempts) opens the circuit.
    breaker_fail_max = models.PositiveSmallIntegerField(
        "failures before the circuit opens", default=3, validators=[MinValueValidator(1)]
    )
    breaker_reset_s = models.PositiveIntegerField(
        "open time before a probe (s)", default=30, validators=[MinValueValidator(1)]
    )
    is_active = models.BooleanField("active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        errors = {}
        if self.kind == self.Kind.OPENAI and not self.base_url:
            errors["base_url"] = "An OpenAI-compatible provider needs its base URL."
        if self.kind == self.Kind.LOCAL and (self.api_key_env or self.api_key_encrypted):
            errors["api_key_env"] = "The built-in local model takes no API key."
        if errors:
            raise ValidationError(errors)

    def set_api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = secrets.encrypt(plaintext) if plaintext else ""

    def api_key(self) -> str:
        """The key in plaintext, for the adapter only. Raises ValueError when it is unusable."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return secrets.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    @property
    def api_key_hint(self) -> str:
        """What may be shown of the key: whether it is set and its last 4 characters."""
        try:
            key = self.api_key()
        except ValueError:
            return "set, but unreadable: enter it again"
        if self.api_key_env:
            return f"from ${self.api_key_env}: " + (f"set (…{key[-4:]})" if key else "not set")
        return f"set (…{key[-4:]})" if key else "not set"

    def config(self) -> ProviderConfig:
        return ProviderConfig(
            kind=self.kind,
            base_url=self.base_url,
            api_key=self.api_key(),
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
        )


class LLMModel(models.Model):
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(
        max_length=120, unique=True, help_text="The model name the provider's API expects."
    )
    context_window = models.PositiveIntegerField(
        default=8192, validators=[MinValueValidator(256)], help_text="In tokens."
    )
    max_output_tokens = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(1)])
    supports_tools = models.BooleanField(default=True)
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "LLM model"

    def __str__(self) -> str:
        return self.name

    def clean(self):
        if (
            self.max_output_tokens
            and self.context_window
            and (self.max_output_tokens >= self.context_window)
        ):
            raise ValidationError({"max_output_tokens": "Must be smaller than the context window."})


class Agent(models.Model):
    """An AI agent customers talk to: its prompt and how it treats double texts and echoes."""

    class DoubleText(models.TextChoices):
        ENQUEUE = "enqueue", "Enqueue: run after the turns before it"
        REJECT = "reject", "Reject while a turn is running"
        INTERRUPT = "interrupt", "Interrupt the running turn"

    class AntiEcho(models.TextChoices):
        OFF = "off", "Off"
        FLAG = "flag", "Flag: keep the reply, record the match"
        REGENERATE = "regenerate", "Regenerate once with an instruction not to repeat"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    system_prompt = models.TextField(blank=True)
    is_active = models.BooleanField("active", default=True)
    is_default = models.BooleanField(
        "default", default=False, help_text="Answers conversations that name no agent."
    )
    double_text = models.CharField(
        max_length=16, choices=DoubleText.choices, default=DoubleText.ENQUEUE
    )
    anti_echo = models.CharField(max_length=16, choices=AntiEcho.choices, default=AntiEcho.FLAG)
    echo_threshold = models.FloatField(
        default=0.9,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Similarity (0 to 1) at or above which a reply counts as an echo.",
    )
    echo_window = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="How many recent completed replies a new reply is compared with.",
    )
    temperature = models.FloatField(
        default=0.2, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_output_tokens = models.PositiveIntegerField(
        default=800, validators=[MinValueValidator(1), MaxValueValidator(32000)]
    )
    tools = models.JSONField(
        default=list, blank=True, help_text="Names of the registered tools this agent may use."
    )
    max_tool_steps = models.PositiveSmallIntegerField(
        default=6,
        validators=[MinValueValidator(1), MaxValueValidator(20)],
        help_text="Model calls per turn at most; the turn fails beyond that.",
    )
    escalate_mood_below = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(-1.0), MaxValueValidator(1.0)],
        help_text="Escalate to a human when the conversation's mood (-1 to 1) stays below "
        "this for the number of turns below. Empty: never.",
    )
    escalate_after_turns = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(50)]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="agents_agent_one_default",
                violation_error_message="Another agent is already the default.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        errors = {}
        if self.is_default and not self.is_active:
            errors["is_active"] = "The default agent must be active."
        if not isinstance(self.tools, list) or not all(isinstance(t, str) for t in self.tools):
            errors["tools"] = "A list of tool names."
        else:
            unknown = sorted(set(self.tools) - set(registered()))
            if unknown:
                errors["tools"] = f"Not registered: {', '.join(unknown)}."
        if self.pk:
            for link in self.chain_links.select_related("model__provider"):
                problem = temperature_problem(self.temperature, link.model.provider.kind)
                if problem:
                    errors["temperature"] = f"{problem} ({link.model} is in the chain)."
        if errors:
            raise ValidationError(errors)


def temperature_problem(temperature: float, provider_kind: str) -> str | None:
    low, high = TEMPERATURE_RANGE.get(provider_kind, (0.0, 2.0))
    if temperature is not None and not low <= temperature <= high:
        return f"{provider_kind} models take a temperature from {low} to {high}"
    return None


class AgentModel(models.Model):
    """One link of an agent's model chain: primary first, then the fallbacks in order."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="chain_links")
    model = models.ForeignKey(LLMModel, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["agent", "position"]
        verbose_name = "model in the chain"
        verbose_name_plural = "model chain (primary first, then fallbacks)"
        constraints = [
            models.UniqueConstraint(fields=["agent", "model"], name="agents_chain_model_once"),
        ]

    def __str__(self) -> str:
        return f"{self.agent} #{self.position}: {self.model}"

    def clean(self):
        if self.model_id is None:
            return
        if not self.model.is_active or not self.model.provider.is_active:
            raise ValidationError({"model": f"{self.model} is inactive."})
        # On the agent's add page the parent is not saved yet but is attached already.
        if self.agent_id is not None or AgentModel.agent.is_cached(self):
            problem = temperature_problem(self.agent.temperature, self.model.provider.kind)
            if problem:
                raise ValidationError(
                    {"model": f"{problem}; this agent's temperature is {self.agent.temperature}."}
                )


class RoutingRule(models.Model):
    """Sends a turn to an agent when the customer's message matches, before any other
    choice. Rules are tried by ascending priority; the first match wins."""

    class Kind(models.TextChoices):
        KEYWORD = "keyword", "Keyword (case-insensitive, whole words)"
        REGEX = "regex", "Regular expression (case-insensitive)"

    name = models.SlugField(max_length=64, unique=True)
    priority = models.IntegerField(default=100, help_text="Lower runs first.")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.KEYWORD)
    pattern = models.CharField(max_length=500)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="routing_rules")
    is_active = models.BooleanField("active", default=True)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        try:
            self.compiled()
        except re.error as exc:
            raise ValidationError({"pattern": f"Not a valid regular expression: {exc}."}) from None
        if self.agent_id and not self.agent.is_active:
            raise ValidationError({"agent": "The target agent is inactive."})

    def compiled(self) -> re.Pattern:
        if self.kind == self.Kind.KEYWORD:
            # A whole word: no word character (nor the keyword's own edge symbol, as in
            # "C++") right before or after it.
            keyword = self.pattern.strip()
            before = "" if keyword[:1].isalnum() else re.escape(keyword[:1])
            after = "" if keyword[-1:].isalnum() else re.escape(keyword[-1:])
            return re.compile(
                rf"(?<![\w{before}]){re.escape(keyword)}(?![\w{after}])", re.IGNORECASE
            )
        return re.compile(self.pattern, re.IGNORECASE)

    def matches(self, text: str) -> bool:
        return bool(self.compiled().search(text))
