from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.serializers import AgentOutput


class AgentList(APIView):
    @extend_schema(
        operation_id="agents_list", summary="Active agents", responses=AgentOutput(many=True)
    )
    def get(self, request: Request) -> Response:
        agents = Agent.objects.filter(is_active=True).order_by("name")
        return Response(AgentOutput(agents, many=True).data)
