"""Django's ``flush``, allowed to empty the audit log.

On PostgreSQL a trigger refuses TRUNCATE of the audit log (migration
``audit/0002``) unless the session allows it. Emptying every table is what
``flush`` is for — an operator resetting an installation, the test runner between
tests — so it allows it for its own statement and nothing else.
"""

from django.core.management.commands import flush
from django.db import connections


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(**options)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('thinnest.audit_log_truncate', 'allow', false)")
        try:
            return super().handle(**options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('thinnest.audit_log_truncate', '', false)")
