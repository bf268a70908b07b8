from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"

    def ready(self):
        # Registers the Celery tasks: the embedded mode's workers run them by name too.
        from conversations import tasks  # noqa: F401
