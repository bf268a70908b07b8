import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Make sure an admin login exists: ORCHESTRA_ADMIN_USER / ORCHESTRA_ADMIN_PASSWORD "
        "when set, otherwise user 'admin' with a generated password kept in the data dir."
    )

    def handle(self, *args, **options):
        username = settings.ORCHESTRA_ADMIN_USER
        password = settings.ORCHESTRA_ADMIN_PASSWORD
        if bool(username) != bool(password):
            raise CommandError(
                "Set both ORCHESTRA_ADMIN_USER and ORCHESTRA_ADMIN_PASSWORD, or neither."
            )
        if username:
            self._ensure(username, password)
            self.stdout.write(f"Admin login: {username} (password from ORCHESTRA_ADMIN_PASSWORD)")
            return
        self._ensure_generated()

    @transaction.atomic
    def _ensure(self, username: str, password: str) -> None:
        User = get_user_model()
        user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: username})
        changed = created or not (user.is_staff and user.is_superuser and user.is_active)
        user.is_staff = user.is_superuser = user.is_active = True
        if created or not user.check_password(password):
            user.set_password(password)
            changed = True
        if changed:
            user.save()

    def _ensure_generated(self) -> None:
        User = get_user_model()
        password_file = settings.DATA_DIR / "admin-password.txt"
        if User.objects.filter(**{User.USERNAME_FIELD: "admin"}).exists():
            where = f" (password in {password_file})" if password_file.exists() else ""
            self.stdout.write(f"Admin login: admin{where}")
            return
        password = secrets.token_urlsafe(12)
        self._ensure("admin", password)
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.stdout.write(
            self.style.SUCCESS(
                f"Created admin login — user: admin  password: {password}\n"
                f"(kept in {password_file})"
            )
        )
