from rest_framework import serializers

from agents.models import Agent


class AgentOutput(serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["slug", "name", "description"]
