from django.contrib import admin, messages
from django.utils.html import format_html

from billing.models import UsageRecord
from conversations.models import Conversation, Turn, TurnStep
from conversations.services import conversation_close


class TurnInline(admin.TabularInline):
    model = Turn
    fields = ["number", "status", "input", "output", "agent", "echo_action", "latency_ms"]
    readonly_fields = fields
    ordering = ["number"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Echo")
    def echo_action(self, turn: Turn) -> str:
        return (turn.echo or {}).get("action", "—")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("agent")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "agent", "status", "turn_count", "created_at", "updated_at"]
    list_filter = ["status", "agent"]
    list_select_related = ["owner", "agent"]
    search_fields = ["id", "owner__username"]
    # Status changes go through services, which cancel running turns: see the actions.
    readonly_fields = [
        "id",
        "owner",
        "agent",
        "status",
        "turn_count",
        "metadata",
        "created_at",
        "updated_at",
    ]
    fields = readonly_fields
    actions = ["close_conversations"]
    inlines = [TurnInline]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # conversations are records: close them, never delete them

    @admin.action(description="Close selected conversations", permissions=["change"])
    def close_conversations(self, request, queryset):
        closed = 0
        for conversation in queryset.exclude(status=Conversation.Status.CLOSED):
            conversation_close(conversation=conversation)
            closed += 1
        self.message_user(request, f"Closed {closed} conversation(s).", messages.SUCCESS)


class TurnStepInline(admin.TabularInline):
    model = TurnStep
    fields = ["attempt", "index", "kind", "name", "arguments", "result", "error", "duration_ms"]
    readonly_fields = fields
    ordering = ["attempt", "index"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class UsageRecordInline(admin.TabularInline):
    model = UsageRecord
    verbose_name_plural = "model calls (usage)"
    fields = [
        "created_at",
        "model",
        "provider",
        "attempt",
        "outcome",
        "error_class",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "tokens_estimated",
        "latency_ms",
        "ttft_ms",
    ]
    readonly_fields = fields
    ordering = ["created_at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("model", "provider")


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "number",
        "status",
        "agent",
        "intent",
        "echo_action",
        "latency_ms",
        "ttft_ms",
        "created_at",
    ]
    list_filter = ["status", "agent", "error_code"]
    list_select_related = ["agent", "conversation"]
    ordering = ["-conversation__created_at", "number"]  # newest conversations first
    search_fields = ["turn_id", "conversation__id", "input", "output"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "conversation_link",
        "number",
        "turn_id",
        "status",
        "input",
        "output",
        "agent",
        "intent",
        "error_code",
        "error_message",
        "attempt",
        "lease_expires_at",
        "echo",
        "input_tokens",
        "output_tokens",
        "created_at",
        "started_at",
        "completed_at",
        "latency_ms",
        "ttft_ms",
        "model_ms",
        "sentiment",
        "input_hash",
        "output_hash",
    ]
    fields = readonly_fields
    inlines = [TurnStepInline, UsageRecordInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Echo")
    def echo_action(self, turn: Turn) -> str:
        return (turn.echo or {}).get("action", "—")

    @admin.display(description="Conversation")
    def conversation_link(self, turn: Turn) -> str:
        return format_html(
            '<a href="../../../conversation/{}/change/">{}</a>',
            turn.conversation_id,
            turn.conversation_id,
        )
