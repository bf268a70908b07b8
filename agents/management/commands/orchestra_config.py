"""`orchestra_config export` and `orchestra_config apply`: the router set-up as YAML
(docs/configuration.md). The work is done by agents.config_io."""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from agents.config_io import (
    ConfigInvalid,
    config_apply,
    config_dump,
    config_export,
    config_load,
    config_plan,
)


class Command(BaseCommand):
    help = (
        "Export the providers, models, agents and routing rules as YAML, or apply such a "
        "file: validated first, then applied all or nothing. Each section the file has is "
        "the whole configuration of its kind: active objects it leaves out are deactivated "
        "(never deleted; the built-in local provider and model always stay); a section left "
        "out leaves its kind untouched. Secrets are never in the file."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{export,apply}")
        export = actions.add_parser("export", help="Print the configuration as YAML.")
        export.add_argument("--output", "-o", metavar="FILE", help="Write it to FILE instead.")
        apply = actions.add_parser(
            "apply",
            help="Apply a YAML file ('-': standard input); print what is created (+), "
            "changed (~), deactivated (-) or unchanged (=).",
        )
        apply.add_argument("file", metavar="FILE")
        apply.add_argument(
            "--dry-run", action="store_true", help="Print the plan only; write nothing."
        )

    def handle(self, *args, action, **options):
        if action == "export":
            self.export(output=options.get("output"))
        else:
            self.apply(path=options["file"], dry_run=options.get("dry_run", False))

    def export(self, *, output: str | None) -> None:
        data = config_export(on_warning=lambda message: self.stderr.write(f"warning: {message}"))
        text = config_dump(data)
        if output is None:
            self.stdout.write(text, ending="")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"Cannot write {output}: {error}") from None
        counts = ", ".join(f"{len(entries)} {section}" for section, entries in data.items())
        self.stderr.write(f"Wrote {output}: {counts}.")

    def apply(self, *, path: str, dry_run: bool) -> None:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"Cannot read {path}: {error}") from None
        try:
            plan = config_plan(data=config_load(text))
        except ConfigInvalid as invalid:
            count = len(invalid.errors)
            listing = "\n".join(f"  - {error}" for error in invalid.errors)
            raise CommandError(
                f"{path}: {count} error{'s' if count != 1 else ''}, nothing was written:\n{listing}"
            ) from None
        for line in plan.lines():
            self.stdout.write(line)
        if dry_run:
            self.stdout.write(f"Dry run: nothing written (would be {plan.summary()}).")
            return
        try:
            config_apply(plan=plan)
        except IntegrityError as error:
            # the database changed between the plan and the transaction
            raise CommandError(f"{path}: nothing was written, apply again: {error}") from None
        self.stdout.write(plan.summary())
