from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self):
        from agents import snapshot  # noqa: F401  (connects its signal receivers)
        from agents.tools import sinks

        sinks.register_tools()
