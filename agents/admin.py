from django import forms
from django.contrib import admin, messages

from agents.health import model_health
from agents.models import Agent, AgentModel, LLMModel, Provider, RoutingRule
from agents.services import provider_test_connection
from agents.tools import registered


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text="For OpenAI-compatible servers (vLLM, Ollama …), e.g. http://host:8000/v1",
    )
    # Write-only: the stored key is never sent back to the browser.
    api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)

    class Meta:
        model = Provider
        fields = [
            "name",
            "kind",
            "base_url",
            "api_key_env",
            "connect_timeout_s",
            "read_timeout_s",
            "max_retries",
            "breaker_fail_max",
            "breaker_reset_s",
            "is_active",
        ]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("api_key") and cleaned.get("api_key_env"):
            self.add_error("api_key", "Give either a key or an environment variable, not both.")
        if cleaned.get("kind") == Provider.Kind.LOCAL and cleaned.get("api_key"):
            self.add_error("api_key", "The built-in local model takes no API key.")
        return cleaned

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key") or self.cleaned_data.get("api_key_env"):
            provider.set_api_key("")
        if self.cleaned_data.get("api_key"):
            provider.set_api_key(self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


class LLMModelInline(admin.TabularInline):
    model = LLMModel
    fields = [
        "name",
        "context_window",
        "max_output_tokens",
        "supports_tools",
        "is_active",
        "health",
    ]
    readonly_fields = ["health"]
    extra = 0

    @admin.display(description="Health")
    def health(self, model: LLMModel) -> str:
        return _health_text(model) if model.pk else "—"


def _health_text(model: LLMModel) -> str:
    health = model_health(model)
    parts = [f"circuit {health['circuit']}"]
    if health["last_latency_ms"] is not None:
        parts.append(f"last call {health['last_latency_ms']} ms")
    if health["last_error"]:
        parts.append(f"last error {health['last_error']} at {health['last_error_at'][:19]}")
    return ", ".join(parts)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "api_key_state", "is_active", "circuits"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["api_key_state"]
    inlines = [LLMModelInline]
    actions = ["test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "base_url", "is_active"]}),
        ("Credentials", {"fields": ["api_key_state", "api_key", "clear_api_key", "api_key_env"]}),
        (
            "Reliability",
            {
                "fields": [
                    "connect_timeout_s",
                    "read_timeout_s",
                    "max_retries",
                    "breaker_fail_max",
                    "breaker_reset_s",
                ]
            },
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("models")

    @admin.display(description="API key")
    def api_key_state(self, provider: Provider) -> str:
        return provider.api_key_hint if provider.pk else "—"

    @admin.display(description="Circuits")
    def circuits(self, provider: Provider) -> str:
        states = [f"{m.name}: {model_health(m)['circuit']}" for m in provider.models.all()]
        return "; ".join(states) or "—"

    @admin.action(description="Test connection (one tiny real call)")
    def test_connection(self, request, queryset):
        for provider in queryset:
            result = provider_test_connection(provider=provider)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{provider.name}: {result.message}", level)


@admin.register(LLMModel)
class LLMModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "provider",
        "context_window",
        "max_output_tokens",
        "supports_tools",
        "is_active",
        "health",
    ]
    list_filter = ["provider", "is_active", "supports_tools"]
    list_select_related = ["provider"]
    search_fields = ["name"]

    @admin.display(description="Health")
    def health(self, model: LLMModel) -> str:
        return _health_text(model)


class AgentModelInline(admin.TabularInline):
    model = AgentModel
    fields = ["position", "model"]
    ordering = ["position"]
    extra = 1
    autocomplete_fields = ["model"]


class AgentForm(forms.ModelForm):
    tools = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The tools this agent may call.",
    )

    class Meta:
        model = Agent
        fields = [
            "name",
            "slug",
            "description",
            "is_active",
            "is_default",
            "system_prompt",
            "temperature",
            "max_output_tokens",
            "tools",
            "max_tool_steps",
            "double_text",
            "anti_echo",
            "echo_threshold",
            "echo_window",
            "escalate_mood_below",
            "escalate_after_turns",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tools"].choices = [
            (name, f"{name}: {tool.description}") for name, tool in registered().items()
        ]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ["name", "slug", "is_active", "is_default", "chain", "double_text", "anti_echo"]
    list_filter = ["is_active", "is_default", "double_text", "anti_echo"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [AgentModelInline]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "is_active", "is_default"]}),
        (
            "Behaviour",
            {
                "fields": [
                    "system_prompt",
                    "temperature",
                    "max_output_tokens",
                    "tools",
                    "max_tool_steps",
                    "double_text",
                ]
            },
        ),
        ("Anti-echo", {"fields": ["anti_echo", "echo_threshold", "echo_window"]}),
        ("Mood", {"fields": ["escalate_mood_below", "escalate_after_turns"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("chain_links__model")

    @admin.display(description="Model chain")
    def chain(self, agent: Agent) -> str:
        links = sorted(agent.chain_links.all(), key=lambda link: link.position)
        return " → ".join(link.model.name for link in links) or "local (default)"


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "priority", "kind", "pattern", "agent", "is_active"]
    list_filter = ["kind", "is_active", "agent"]
    list_select_related = ["agent"]
    list_editable = ["priority", "is_active"]
    search_fields = ["name", "pattern"]
    ordering = ["priority", "name"]
