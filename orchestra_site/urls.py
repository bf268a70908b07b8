from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from access.api import me
from agents.api import AgentList
from commerce.api import ShippingQuoteCreate
from conversations import api as conversations_api
from conversations.sse import TurnEvents
from infrastructure.api_errors import not_found_view
from orchestra_site import views

handler404 = "infrastructure.api_errors.not_found_view"
handler500 = "infrastructure.api_errors.server_error_view"

conversation = "conversations/<uuid:conversation_id>/"
api_v1 = [
    path("me/", me, name="me"),
    path("agents/", AgentList.as_view(), name="agent-list"),
    path("shipping/quotes/", ShippingQuoteCreate.as_view(), name="shipping-quote"),
    path(
        "conversations/",
        conversations_api.ConversationListCreate.as_view(),
        name="conversation-list",
    ),
    path(conversation, conversations_api.ConversationDetail.as_view(), name="conversation-detail"),
    path(
        conversation + "close/",
        conversations_api.ConversationClose.as_view(),
        name="conversation-close",
    ),
    path(conversation + "turns/", conversations_api.TurnListCreate.as_view(), name="turn-list"),
    path(
        conversation + "turns/<int:number>/",
        conversations_api.TurnDetail.as_view(),
        name="turn-detail",
    ),
    path(conversation + "turns/<int:number>/events/", TurnEvents.as_view(), name="turn-events"),
]

urlpatterns = [
    path("health/", views.health, name="health"),
    path("ready/", views.ready, name="ready"),
    path("status/", views.status, name="status"),
    path("", include("django_prometheus.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Unknown API paths answer in the API's error format, in DEBUG too.
    re_path(r"^api/", not_found_view),
]
