from django.db import models


class UsageRecord(models.Model):
    """One model call attempt: who called which model, the tokens and how it went.

    Tokens come from the provider when it reports them; otherwise they are estimated and
    `tokens_estimated` says so.
    """

    class Outcome(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"
        RESET = "reset", "Failed after streaming (reset)"

    # Billing data outlives nothing it describes: a turn with usage cannot be deleted.
    turn = models.ForeignKey(
        "conversations.Turn", on_delete=models.PROTECT, related_name="usage_records"
    )
    agent = models.ForeignKey("agents.Agent", on_delete=models.PROTECT, related_name="+")
    provider = models.ForeignKey("agents.Provider", on_delete=models.PROTECT, related_name="+")
    model = models.ForeignKey("agents.LLMModel", on_delete=models.PROTECT, related_name="+")
    attempt = models.PositiveSmallIntegerField(help_text="1 for the first call to this model.")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_class = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model", "created_at"])]

    def __str__(self) -> str:
        return f"{self.model} attempt {self.attempt} ({self.outcome})"
