"""PostgreSQL: Django's backend with django-prometheus's query metrics, and batches that
fit the parameters PostgreSQL binds in one statement.

With server-side binding (DATABASE_PREPARED_STATEMENTS) a statement takes at most 65,535
parameters. Django 5.2 sizes PostgreSQL's batches without that limit, so deleting
objects with more than 65,535 related rows failed: it collects the related rows with one
`IN (…)` of every object at once.
"""

from django.db.backends.postgresql.features import DatabaseFeatures as PostgreSQLFeatures
from django.db.backends.postgresql.operations import DatabaseOperations as PostgreSQLOperations
from django.utils.functional import cached_property
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PrometheusWrapper

MAX_BOUND_PARAMETERS = 65_535


class DatabaseFeatures(PostgreSQLFeatures):
    @cached_property
    def max_query_params(self):  # read by in_bulk(), among others
        if self.connection.settings_dict["OPTIONS"].get("server_side_binding"):
            return MAX_BOUND_PARAMETERS
        return None


class DatabaseOperations(PostgreSQLOperations):
    def bulk_batch_size(self, fields, objs):
        limit = self.connection.features.max_query_params
        if limit is None:
            return super().bulk_batch_size(fields, objs)
        return max(1, min(len(objs), limit // max(1, len(fields))))


class DatabaseWrapper(PrometheusWrapper):
    features_class = DatabaseFeatures
    ops_class = DatabaseOperations
