"""POST /api/v1/shipping/quotes/ (docs/api.md). Thin: the quote engine does the work."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from commerce.quotes import shipping_quote
from commerce.serializers import QuoteInput, QuoteOutput


class ShippingQuoteCreate(APIView):
    @extend_schema(
        operation_id="shipping_quotes_create",
        summary="Quote shipping for a parcel",
        description=(
            "The eligible carrier services for the destination, weight and order value, "
            "ranked: preferred first, then by price, then by delivery days; prices after "
            "the shipping rules, with the trace of every rule. A parcel no service can "
            "carry (too heavy, or no service to a valid country) is not an error: 200 with "
            "empty `options` and a `message`. A code that is not a country, an unknown "
            "channel, or services priced in several currencies with no channel or currency "
            "to choose is a `validation_error` naming the field."
        ),
        request=QuoteInput,
        responses={200: OpenApiResponse(QuoteOutput, description="The ranked options.")},
        examples=[
            OpenApiExample(
                "A 2.5 kg parcel to Germany",
                value={"country": "DE", "weight_kg": 2.5, "order_value": "120.00"},
                request_only=True,
            ),
            OpenApiExample(
                "From a sales channel",
                value={
                    "country": "US",
                    "weight_kg": "0.8",
                    "order_value": "45.00",
                    "channel": "web-us",
                },
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        payload = QuoteInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            quote = shipping_quote(
                country=data["country"],
                weight_kg=data["weight_kg"],
                order_value=data["order_value"],
                channel=data.get("channel"),
                currency=data.get("currency"),
            )
        except DjangoValidationError as invalid:
            raise ValidationError(invalid.message_dict) from None
        return Response(QuoteOutput(quote).data)
