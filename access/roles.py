"""Staff roles (docs/api.md): the model permissions each group holds.

`manage` grants add/change/delete/view; `change` grants change/view (status changes, no
creation); `view` grants view. `view_all` grants view on every model of Orchestra's apps
except SECRET_MODELS, so a model added later is visible to those roles without an edit
here; a data migration that calls `sync_roles` applies the table to existing databases.
"""

from dataclasses import dataclass, field

from django.contrib.auth.management import create_permissions

ORCHESTRA_APPS = ("orchestra", "agents", "commerce", "billing", "conversations")
# Other users' credentials. The admin shows each user only their own keys.
SECRET_MODELS = frozenset({"orchestra.apikey"})


@dataclass(frozen=True)
class Role:
    manage: tuple[str, ...] = ()
    change: tuple[str, ...] = ()
    view: tuple[str, ...] = ()
    view_all: bool = False
    own_api_keys: bool = field(default=True)


ROLES: dict[str, Role] = {
    "operators": Role(
        manage=(
            "agents.provider",
            "agents.llmmodel",
            "agents.agent",
            "agents.agentmodel",
            "agents.routingrule",
            "commerce.carrier",
            "commerce.carrierservice",
            "commerce.shippingrule",
            "commerce.saleschannel",
            "commerce.warehouse",
            "commerce.product",
            "commerce.stocklevel",
            "commerce.taxrate",
        ),
        change=("conversations.conversation",),
        view_all=True,
    ),
    "billing": Role(
        view=(
            "conversations.conversation",
            "conversations.turn",
            "conversations.turnstep",
            "billing.usagerecord",
        )
    ),
    "viewers": Role(view_all=True, own_api_keys=False),
}


def _codenames(role: Role, models_by_app: dict[str, list[str]]) -> set[tuple[str, str]]:
    wanted: set[tuple[str, str]] = set()

    def grant(label: str, actions: tuple[str, ...]) -> None:
        app_label, model_name = label.split(".")
        wanted.update((app_label, f"{action}_{model_name}") for action in actions)

    for label in role.manage:
        grant(label, ("add", "change", "delete", "view"))
    for label in role.change:
        grant(label, ("change", "view"))
    for label in role.view:
        grant(label, ("view",))
    if role.view_all:
        for app_label, model_names in models_by_app.items():
            for model_name in model_names:
                if f"{app_label}.{model_name}" not in SECRET_MODELS:
                    grant(f"{app_label}.{model_name}", ("view",))
    if role.own_api_keys:
        grant("orchestra.apikey", ("add", "change", "view"))
    return wanted


def sync_roles(apps, schema_editor=None) -> None:
    """Create the groups and give each exactly the permissions its Role describes.

    Runs inside migrations, before Django's post_migrate creates permissions, so the
    permissions of every app migrated so far are created here first.
    """
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    models_by_app = {
        app_label: [m._meta.model_name for m in apps.get_app_config(app_label).get_models()]
        for app_label in ORCHESTRA_APPS
        if app_label in {c.label for c in apps.get_app_configs()}
    }
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, role in ROLES.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = _codenames(role, models_by_app)
        permissions = [
            permission
            for permission in Permission.objects.filter(
                content_type__app_label__in=ORCHESTRA_APPS
            ).select_related("content_type")
            if (permission.content_type.app_label, permission.codename) in wanted
        ]
        group.permissions.set(permissions)
