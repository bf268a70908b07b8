"""Input fields of the API that take JSON strings only: DRF's CharField would turn 123 or
true into "123" or "True" and accept them."""

from rest_framework import serializers


class _StringsOnly:
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictCharField(_StringsOnly, serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}


class StrictSlugField(_StringsOnly, serializers.SlugField):
    default_error_messages = {"not_a_string": "Must be a string."}
