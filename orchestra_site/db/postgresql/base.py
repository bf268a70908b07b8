"""PostgreSQL: Django's backend with django-prometheus's query metrics, and batches that
fit the parameters PostgreSQL binds in one statement.

With server-side binding (DATABASE_PREPARED_STATEMENTS) a statement takes at most 65,535
parameters. Django 5.2 sizes PostgreSQL's batches without that limit, so deleting
objects with more than 65,535 related rows failed: it collects the related rows with one
`IN (…)` of every object at once.
"""

from django.db.backends.postgresql.operations import DatabaseOperations as PostgreSQLOperations
from django_prometheus.db.backends.postgresql.base import DatabaseWrapper as PrometheusWrapper

MAX_BOUND_PARAMETERS = 65_535


class DatabaseOperations(PostgreSQLOperations):
    def bulk_batch_size(self, fields, objs):
        if not self.connection.settings_dict["OPTIONS"].get("server_side_binding"):
            return super().bulk_batch_size(fields, objs)
        return max(1, min(len(objs), MAX_BOUND_PARAMETERS // max(1, len(fields))))


class DatabaseWrapper(PrometheusWrapper):
    ops_class = DatabaseOperations
