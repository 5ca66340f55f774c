from django.core.management.base import BaseCommand, CommandError

from accounts.models import Role
from accounts.services import organisation_get_or_create, user_create_or_update


class Command(BaseCommand):
    help = "Create an organisation and a user if missing, and give the user a role in it."

    def add_arguments(self, parser):
        parser.add_argument("org_slug")
        parser.add_argument("username")
        parser.add_argument("--password", default=None)
        parser.add_argument("--email", default="")
        parser.add_argument("--role", default=Role.MEMBER, choices=Role.values)

    def handle(self, *args, org_slug: str, username: str, password, email: str, role: str, **options):
        try:
            organisation = organisation_get_or_create(slug=org_slug)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        user, membership = user_create_or_update(
            organisation=organisation, username=username, password=password, role=role, email=email
        )
        self.stdout.write(f"{user.get_username()} is {membership.role} of {organisation.slug}")
