from django.core.management.base import BaseCommand, CommandError

from accounts.services import InvalidScopes, api_key_create, organisation_get_or_create
from audit.services import Actor


class Command(BaseCommand):
    help = "Create an API key for an organisation (created if missing); prints the key last."

    def add_arguments(self, parser):
        parser.add_argument("org_slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--scopes", default="read", help="comma-separated: read,ingest,admin")

    def handle(self, *args, org_slug: str, name: str, scopes: str, **options):
        try:
            organisation = organisation_get_or_create(slug=org_slug)
            created = api_key_create(
                organisation=organisation,
                name=name,
                scopes=scopes.split(","),
                actor=Actor.system("manage.py"),
            )
        except (InvalidScopes, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"Created key '{created.api_key.name}' for {organisation.slug} with scopes "
            f"{','.join(created.api_key.scopes)}. It is shown only now:"
        )
        self.stdout.write(created.raw_key)
