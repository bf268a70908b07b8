"""Configuration as code (docs/configuration.md): export the router set-up to YAML and
apply it back.

The file has four sections, each a list of entries matched to rows by natural key:
``providers`` and ``models`` by ``name``, ``agents`` by ``slug``, ``routing_rules`` by
``name``. An entry describes its object completely: a field it leaves out takes the model's
default (``base_url`` and ``api_key_env`` empty, ``escalate_mood_below`` none, an empty
model chain or tool list …).

A section the file has is the whole configuration of its kind: an active object of that
kind the file does not mention is deactivated (``is_active`` false; a deactivated agent
also stops being the default), never deleted. The built-in ``local`` provider and ``local``
model always stay. A section the file leaves out, or leaves empty (``routing_rules:`` with
no entries), leaves its kind untouched; ``routing_rules: []`` deactivates every rule.

Secrets are never in the file: a provider names the environment variable that holds its
key (``api_key_env``). A key stored encrypted in the database is neither exported nor
touched by an apply.

Applying is validate → plan → apply: ``config_validate`` reports every problem of the file
at once, ``config_plan`` compares the file with the database (create / change / deactivate
/ unchanged) and ``config_apply`` writes the plan in one transaction.
"""

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models, transaction

from agents.models import Agent, AgentModel, LLMModel, Provider, RoutingRule, temperature_problem
from agents.tools import registered

Action = Literal["create", "change", "deactivate", "unchanged"]


class ConfigInvalid(ValueError):
    """The file cannot be applied; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


# --- the file's shape -------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    attr: str  # model attribute; "chain" is the agent's ordered model chain
    type: Literal["str", "int", "float", "bool", "names"]
    required: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    export_if_set: bool = False  # left out of the export when empty


@dataclass(frozen=True)
class _Section:
    key: str  # the file's section name
    label: str  # what the plan calls one object
    model: type[models.Model]
    natural_key: str
    fields: Mapping[str, _Field]  # file name → field, in export order
    references: Mapping[str, str] = field(default_factory=dict)  # attr → target section


PROVIDERS = _Section(
    "providers",
    "provider",
    Provider,
    "name",
    {
        "name": _Field("name", "str", required=True),
        "kind": _Field("kind", "str", required=True, choices=tuple(Provider.Kind.values)),
        "base_url": _Field("base_url", "str", export_if_set=True),
        "api_key_env": _Field("api_key_env", "str", export_if_set=True),
        "timeout_s": _Field("read_timeout_s", "float"),
        "connect_timeout_s": _Field("connect_timeout_s", "float"),
        "max_retries": _Field("max_retries", "int"),
        "breaker_fail_max": _Field("breaker_fail_max", "int"),
        "breaker_reset_s": _Field("breaker_reset_s", "int"),
        "active": _Field("is_active", "bool"),
    },
)
MODELS = _Section(
    "models",
    "model",
    LLMModel,
    "name",
    {
        "name": _Field("name", "str", required=True),
        "provider": _Field("provider", "str", required=True),
        "context_window": _Field("context_window", "int"),
        "max_output_tokens": _Field("max_output_tokens", "int"),
        "supports_tools": _Field("supports_tools", "bool"),
        "active": _Field("is_active", "bool"),
    },
    references={"provider": "providers"},
)
AGENTS = _Section(
    "agents",
    "agent",
    Agent,
    "slug",
    {
        "slug": _Field("slug", "str", required=True),
        "name": _Field("name", "str", required=True),
        "description": _Field("description", "str"),
        "system_prompt": _Field("system_prompt", "str"),
        "models": _Field("chain", "names"),
        "tools": _Field("tools", "names"),
        "double_text": _Field("double_text", "str", choices=tuple(Agent.DoubleText.values)),
        "anti_echo": _Field("anti_echo", "str", choices=tuple(Agent.AntiEcho.values)),
        "echo_threshold": _Field("echo_threshold", "float"),
        "echo_window": _Field("echo_window", "int"),
        "temperature": _Field("temperature", "float"),
        "max_output_tokens": _Field("max_output_tokens", "int"),
        "max_tool_steps": _Field("max_tool_steps", "int"),
        "escalate_mood_below": _Field("escalate_mood_below", "float", nullable=True),
        "escalate_after_turns": _Field("escalate_after_turns", "int"),
        "active": _Field("is_active", "bool"),
        "default": _Field("is_default", "bool"),
    },
    references={"chain": "models"},
)
RULES = _Section(
    "routing_rules",
    "rule",
    RoutingRule,
    "name",
    {
        "name": _Field("name", "str", required=True),
        "priority": _Field("priority", "int"),
        "kind": _Field("kind", "str", choices=tuple(RoutingRule.Kind.values)),
        "pattern": _Field("pattern", "str", required=True),
        "agent": _Field("agent", "str", required=True),
        "active": _Field("is_active", "bool"),
    },
    references={"agent": "agents"},
)
SECTIONS: tuple[_Section, ...] = (PROVIDERS, MODELS, AGENTS, RULES)
# Built in, always there (docs/configuration.md): never deactivated by a file that leaves them out.
_BUILT_IN = {PROVIDERS.key: "local", MODELS.key: "local"}
_RELATIONS = {"provider", "agent", "chain"}
# Field names that can only mean a secret in plaintext.
_SECRET = re.compile(r"(^|_)(api_?key|key|secret|password|passwd|token)(_encrypted)?$", re.I)
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "names": "a list of names",
}


def _default(section: _Section, spec: _Field) -> Any:
    if spec.attr == "chain":
        return []
    return section.model._meta.get_field(spec.attr).get_default()


def _db_objects(section: _Section) -> dict[str, models.Model]:
    queryset = section.model.objects.all()
    if section is MODELS:
        queryset = queryset.select_related("provider")
    elif section is AGENTS:
        queryset = queryset.prefetch_related("chain_links__model__provider")
    elif section is RULES:
        queryset = queryset.select_related("agent")
    return {getattr(obj, section.natural_key): obj for obj in queryset}


def _current(section: _Section, obj: models.Model) -> dict[str, Any]:
    """The row as the file spells it: every field, relations by natural key."""
    values = {}
    for name, spec in section.fields.items():
        if spec.attr == "chain":
            links = sorted(obj.chain_links.all(), key=lambda link: (link.position, link.pk))
            values[name] = [link.model.name for link in links]
        elif spec.attr == "provider":
            values[name] = obj.provider.name
        elif spec.attr == "agent":
            values[name] = obj.agent.slug
        elif spec.type == "names":
            values[name] = list(getattr(obj, spec.attr))
        else:
            values[name] = getattr(obj, spec.attr)
    return values


# --- export ---------------------------------------------------------------------------


def config_export(*, on_warning: Callable[[str], None] | None = None) -> dict[str, list[dict]]:
    """The whole configuration, in the file's shape, ordered by natural key. Never a
    secret: a provider whose key is stored encrypted is exported without it, and
    ``on_warning`` hears about it."""
    data: dict[str, list[dict]] = {}
    for section in SECTIONS:
        objects = _db_objects(section)
        entries = []
        for key in sorted(objects):
            values = _current(section, objects[key])
            for name, spec in section.fields.items():
                if spec.export_if_set and not values[name]:
                    del values[name]
            entries.append(values)
            obj = objects[key]
            if (
                section is PROVIDERS
                and obj.api_key_encrypted
                and not obj.api_key_env
                and on_warning is not None
            ):
                on_warning(f"provider {key}: its stored key is not exported; set api_key_env")
        data[section.key] = entries
    return data


class _Dumper(yaml.SafeDumper):
    """safe_dump's dumper; multi-line strings (system prompts) as readable blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def config_dump(data: Mapping[str, Any]) -> str:
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# --- load and validate ----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """safe_load's loader, except that a key given twice in one mapping is an error."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`: its keys may be overridden
        key = loader.construct_object(key_node, deep=deep)
        try:
            repeated = key in seen
        except TypeError:
            continue  # unhashable: the base constructor reports it
        if repeated:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found the key {key!r} twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def config_load(text: str) -> Any:
    """The parsed YAML (yaml.safe_load rules); ConfigInvalid, with the line, when it is
    not valid YAML."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigInvalid([f"not valid YAML{where}: {problem}"]) from None


@dataclass
class _Entry:
    section: _Section
    index: int
    raw: Mapping[str, Any]
    label: str
    key: str | None  # natural key, when it is a usable string
    values: dict[str, Any] = field(default_factory=dict)  # every field, defaults filled
    complete: bool = True  # every field present with the right type
    errors: list[str] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)  # fields with an error already

    def error(self, name: str | None, message: str) -> None:
        if name is None:
            self.errors.append(f"{self.label}: {message}")
        else:
            self.reported.add(name)
            self.errors.append(f"{self.label}: {name}: {message}")


@dataclass
class _Parsed:
    general: list[str]  # errors of the file as a whole
    entries: dict[str, list[_Entry]]  # section key → entries, file order
    db: dict[str, dict[str, models.Model]]  # section key → natural key → row
    # section key → natural keys of the active rows the file leaves out, to deactivate;
    # only for the sections the file has
    retired: dict[str, list[str]] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        """Every error: the file's, then each entry's in file order."""
        by_entry = [e for entries in self.entries.values() for n in entries for e in n.errors]
        return self.general + by_entry

    def in_file(self, section: _Section) -> dict[str, _Entry]:
        found: dict[str, _Entry] = {}
        for entry in self.entries[section.key]:
            if entry.key is not None:
                found.setdefault(entry.key, entry)
        return found


def _type_problem(spec: _Field, value: Any) -> str | None:
    if value is None and spec.nullable:
        return None
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "names": isinstance(value, list) and all(isinstance(item, str) for item in value),
    }[spec.type]
    if ok:
        return None
    expected = _TYPE_NAMES[spec.type] + (" or null" if spec.nullable else "")
    got = "null" if value is None else type(value).__name__
    return f"expected {expected}, got {got}"


def _check_fields(entry: _Entry) -> None:
    """The entry on its own: known fields, required ones, types, choices."""
    section, raw = entry.section, entry.raw
    for name in raw:
        if name in section.fields:
            continue
        if isinstance(name, str) and _SECRET.search(name):
            entry.error(name, "secrets are never in the file: use api_key_env")
            continue
        close = difflib.get_close_matches(str(name), section.fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        entry.error(str(name), f"unknown field{hint}")
    for name, spec in section.fields.items():
        if name not in raw:
            if spec.required:
                entry.error(name, "required")
                entry.complete = False
            else:
                entry.values[name] = _default(section, spec)
            continue
        value = raw[name]
        problem = _type_problem(spec, value)
        if problem is None and spec.required and spec.type == "str" and not value.strip():
            problem = "required"
        if problem:
            entry.error(name, problem)
            entry.complete = False
            continue
        entry.values[name] = float(value) if spec.type == "float" and value is not None else value
        if spec.choices and value not in spec.choices:
            entry.error(name, f"must be one of {', '.join(spec.choices)}")
        if spec.type == "names":
            twice = sorted({item for item in value if value.count(item) > 1})
            if twice:
                entry.error(name, f"listed twice: {', '.join(twice)}")


def _check_entry(entry: _Entry, tools: Iterable[str]) -> None:
    """What the model's full_clean() checks too, in the file's words."""
    values = entry.values
    if entry.section is AGENTS and "tools" in values and "tools" not in entry.reported:
        unknown = [tool for tool in values["tools"] if tool not in tools]
        if unknown:
            entry.error("tools", f"not registered: {', '.join(unknown)}")
    if (
        entry.section is RULES
        and values.get("kind") == RoutingRule.Kind.REGEX
        and "pattern" in values
    ):
        try:
            re.compile(values["pattern"], re.IGNORECASE)
        except re.error as error:
            entry.error("pattern", f"not a valid regular expression: {error}")


def _full_clean(entry: _Entry, db_row: models.Model | None) -> None:
    """The model's own validation, on an unsaved instance built from the entry; only
    what the checks before did not already report."""
    section = entry.section
    attrs = {
        spec.attr: entry.values[name]
        for name, spec in section.fields.items()
        if spec.attr not in _RELATIONS
    }
    if section is PROVIDERS:
        # never in the file; kept by an apply, so the model's checks must see it
        attrs["api_key_encrypted"] = db_row.api_key_encrypted if db_row is not None else ""
    instance = section.model(**attrs)
    try:
        instance.full_clean(
            exclude=sorted(_RELATIONS & {spec.attr for spec in section.fields.values()}),
            validate_unique=False,  # natural keys: duplicates are checked in the file
            validate_constraints=False,  # the one default agent: checked on the whole file
        )
    except ValidationError as error:
        names = {spec.attr: name for name, spec in section.fields.items()}
        already = set(entry.reported)
        for attr, messages in error.message_dict.items():
            name = None if attr == NON_FIELD_ERRORS else names.get(attr, attr)
            if name not in already:
                for message in messages:
                    entry.error(name, message)


def _parse(data: Any) -> _Parsed:
    parsed = _Parsed(
        general=[],
        entries={s.key: [] for s in SECTIONS},
        db={},
        retired={s.key: [] for s in SECTIONS},
    )
    errors = parsed.general
    expected = ", ".join(s.key for s in SECTIONS)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"the file must be a mapping with the sections {expected}")
        return parsed
    for key in data:
        if key not in parsed.entries:
            errors.append(f"{key}: unknown section (expected one of: {expected})")
    parsed.db = {section.key: _db_objects(section) for section in SECTIONS}
    tools = set(registered())

    # Each entry on its own: fields, types, choices, then the model's full_clean().
    for section in SECTIONS:
        items = data.get(section.key)
        if items is None:
            continue
        if not isinstance(items, list):
            errors.append(f"{section.key}: expected a list of entries")
            continue
        first_at: dict[str, int] = {}
        for index, raw in enumerate(items):
            label = f"{section.key}[{index}]"
            if not isinstance(raw, dict):
                entry = _Entry(section, index, {}, label, None, complete=False)
                parsed.entries[section.key].append(entry)
                entry.error(None, "expected a mapping")
                continue
            key = raw.get(section.natural_key)
            key = key if isinstance(key, str) and key.strip() else None
            if key is not None:
                label = f"{label} ({section.natural_key}={key})"
            entry = _Entry(section, index, raw, label, key)
            parsed.entries[section.key].append(entry)
            _check_fields(entry)
            if key is not None:
                if key in first_at:
                    where = f"{section.key}[{first_at[key]}]"
                    entry.error(section.natural_key, f"duplicate of {where}")
                else:
                    first_at[key] = index
            _check_entry(entry, tools)
            if entry.complete:
                _full_clean(entry, parsed.db[section.key].get(key))
        # The section is the whole configuration of its kind: what it leaves out retires.
        named = {entry.key for entry in parsed.entries[section.key]}
        parsed.retired[section.key] = sorted(
            key
            for key, row in parsed.db[section.key].items()
            if row.is_active and key not in named and key != _BUILT_IN.get(section.key)
        )

    _check_references(parsed)
    return parsed


def _check_references(parsed: _Parsed) -> None:
    """What involves more than one entry: references, chains, rules' agents, the default."""
    db = parsed.db
    in_file = {section.key: parsed.in_file(section) for section in SECTIONS}
    file_providers, file_models = in_file["providers"], in_file["models"]
    file_agents = in_file["agents"]
    retired = {key: set(names) for key, names in parsed.retired.items()}

    def provider_state(name: str) -> tuple[str, bool] | None:
        """(kind, active) the provider will have; None when unknown or invalid."""
        if name in file_providers:
            values = file_providers[name].values
            if not {"kind", "active"} <= values.keys():
                return None
            return values["kind"], values["active"]
        row = db["providers"].get(name)
        if row is None:
            return None
        return row.kind, row.is_active and name not in retired["providers"]

    def model_state(name: str) -> tuple[str, bool] | None:
        """(provider name, active) the model will have; None when unknown or invalid."""
        if name in file_models:
            values = file_models[name].values
            if not {"provider", "active"} <= values.keys():
                return None
            return values["provider"], values["active"]
        row = db["models"].get(name)
        if row is None:
            return None
        return row.provider.name, row.is_active and name not in retired["models"]

    def exists(section: _Section, name: str) -> bool:
        return name in in_file[section.key] or name in db[section.key]

    for entry in parsed.entries["models"]:
        provider = entry.values.get("provider")
        if provider is not None and not exists(PROVIDERS, provider):
            entry.error("provider", f"unknown provider: {provider}{_NOWHERE}")

    for entry in parsed.entries["agents"]:
        values = entry.values
        row = db["agents"].get(entry.key)
        linked = set(_current(AGENTS, row)["models"]) if row is not None else set()
        for name in values.get("models", []):
            if not exists(MODELS, name):
                entry.error("models", f"unknown model: {name}{_NOWHERE}")
                continue
            model = model_state(name)
            provider = provider_state(model[0]) if model else None
            if model is None or provider is None:
                continue  # reported on the model's or the provider's own entry
            # A link the agent already has may point at a model retired since, or by this
            # file: kept as is (the router skips inactive models).
            if name not in linked and name in retired["models"]:
                entry.error("models", f"{name} is not in the file's models: it is deactivated")
            elif name not in linked and not model[1]:
                entry.error("models", f"{name} is inactive")
            elif name not in linked and model[0] in retired["providers"]:
                message = f"{name} is inactive: its provider {model[0]} is not in the file"
                entry.error("models", message)
            elif name not in linked and not provider[1]:
                message = f"{name} is inactive: its provider {model[0]} is"
                entry.error("models", message)
            temperature = values.get("temperature")
            problem = temperature_problem(temperature, provider[0])
            if problem and "temperature" not in entry.reported:
                entry.error("temperature", f"{problem} ({name} is in the chain)")

    # An agent the file leaves alone must still suit a provider kind the file changes.
    # One the file deactivates is no longer used: not checked.
    for slug, row in db["agents"].items():
        if slug in file_agents or slug in retired["agents"]:
            continue
        for link in row.chain_links.all():
            model = model_state(link.model.name)
            provider = provider_state(model[0]) if model else None
            if provider is None or provider[0] == link.model.provider.kind:
                continue
            problem = temperature_problem(row.temperature, provider[0])
            if problem:
                if model[0] != link.model.provider.name:
                    culprit = file_models[link.model.name]
                else:
                    culprit = file_providers[model[0]]
                message = (
                    f"{problem}, but agent {slug} (not in the file) has temperature "
                    f"{row.temperature} and {link.model.name} in its chain"
                )
                culprit.error(None, message)

    for entry in parsed.entries["routing_rules"]:
        values = entry.values
        slug = values.get("agent")
        if slug is None:
            continue
        if not exists(AGENTS, slug):
            entry.error("agent", f"unknown agent: {slug}{_NOWHERE}")
            continue
        target = file_agents.get(slug)
        if target is not None:
            agent_active = target.values.get("active")
        else:
            agent_active = db["agents"][slug].is_active and slug not in retired["agents"]
        row = db["routing_rules"].get(entry.key)
        # A rule the file leaves as it is may point at an agent retired since, or by this file.
        changes = row is None or _current(RULES, row) != values
        if agent_active is False and values.get("active") is True and changes:
            if slug in retired["agents"]:
                entry.error("agent", f"{slug} is not in the file's agents: it is deactivated")
            else:
                entry.error("agent", f"{slug} is inactive")

    defaults = [entry for entry in parsed.entries["agents"] if entry.values.get("default")]
    # The default agent the file deactivates gives the default up, to the file's default;
    # with none named the product would be left without one.
    if not defaults:
        for slug in parsed.retired["agents"]:
            if db["agents"][slug].is_default:
                message = f"agents: the default agent {slug} is not in the file; name a default"
                parsed.general.append(message)
    default_slugs = [entry.key or entry.label for entry in defaults] + [
        slug
        for slug, row in db["agents"].items()
        if row.is_default and slug not in file_agents and slug not in retired["agents"]
    ]
    if len(default_slugs) > 1:
        message = f"more than one default agent: {', '.join(default_slugs)}"
        for entry in defaults:
            entry.error("default", message)


_NOWHERE = " (neither in the file nor in the database)"


def config_validate(*, data: Any) -> list[str]:
    """Every problem of the parsed file (config_load's result), each naming its entry,
    e.g. ``agents[2] (slug=support): tools: not registered: foo``. Empty: it can be
    applied. Reads the database, never writes."""
    return _parse(data).errors


# --- plan and apply -------------------------------------------------------------------


_SYMBOLS: dict[Action, str] = {"create": "+", "change": "~", "deactivate": "-", "unchanged": "="}


@dataclass(frozen=True)
class PlanItem:
    section: str  # "providers", "models", "agents", "routing_rules"
    label: str  # "provider", "model", "agent", "rule"
    key: str  # natural key
    action: Action
    values: Mapping[str, Any]  # every field as the file spells it (as it will be)
    changed: tuple[str, ...] = ()  # the file's names of the fields that differ

    def line(self) -> str:
        text = f"{_SYMBOLS[self.action]} {self.label} {self.key}"
        if self.action == "change":
            return f"{text}: {', '.join(self.changed)}"
        return text


@dataclass(frozen=True)
class Plan:
    # dependency order: providers, models, agents, rules; in each, the file's entries in
    # file order, then the deactivations by natural key
    items: tuple[PlanItem, ...]

    def count(self, action: Action) -> int:
        return sum(1 for item in self.items if item.action == action)

    def lines(self) -> list[str]:
        return [item.line() for item in self.items]

    def summary(self) -> str:
        created, changed = self.count("create"), self.count("change")
        deactivated, unchanged = self.count("deactivate"), self.count("unchanged")
        return (
            f"{created} created, {changed} changed, {deactivated} deactivated, "
            f"{unchanged} unchanged"
        )


def config_plan(*, data: Any) -> Plan:
    """What applying the parsed file would do to each object it names, and which active
    objects of its sections it leaves out and so deactivates. Raises ConfigInvalid with
    every error when the file does not validate."""
    parsed = _parse(data)
    if parsed.errors:
        raise ConfigInvalid(parsed.errors)
    items = []
    for section in SECTIONS:
        for entry in parsed.entries[section.key]:
            row = parsed.db[section.key].get(entry.key)
            values = dict(entry.values)
            if row is None:
                items.append(PlanItem(section.key, section.label, entry.key, "create", values))
                continue
            current = _current(section, row)
            changed = tuple(name for name in section.fields if values[name] != current[name])
            action: Action = "change" if changed else "unchanged"
            items.append(PlanItem(section.key, section.label, entry.key, action, values, changed))
        for key in parsed.retired[section.key]:
            current = _current(section, parsed.db[section.key][key])
            values = {**current, "active": False}
            if section is AGENTS:
                values["default"] = False
            changed = tuple(name for name in section.fields if values[name] != current[name])
            items.append(PlanItem(section.key, section.label, key, "deactivate", values, changed))
    return Plan(tuple(items))


def _assign(section: _Section, obj: models.Model, values: Mapping[str, Any]) -> None:
    for name, spec in section.fields.items():
        if spec.attr == "provider":
            obj.provider = Provider.objects.get(name=values[name])
        elif spec.attr == "agent":
            obj.agent = Agent.objects.get(slug=values[name])
        elif spec.attr != "chain":
            setattr(obj, spec.attr, values[name])


@transaction.atomic
def config_apply(*, plan: Plan) -> None:
    """Write the plan, all or nothing: providers, models, agents and their chains, then
    rules. Unchanged objects are not touched; deactivated ones only lose ``is_active``
    (an agent ``is_default`` too); nothing is deleted."""
    by_section = {section.key: section for section in SECTIONS}
    # An agent giving up the default (a deactivated one too) goes before the one taking it
    # (one default at most).
    ordered = sorted(
        plan.items,
        key=lambda item: (
            [s.key for s in SECTIONS].index(item.section),
            item.section == "agents" and item.values["default"],
        ),
    )
    for item in ordered:
        if item.action == "unchanged":
            continue
        section = by_section[item.section]
        if item.action == "deactivate":
            obj = section.model.objects.select_for_update().get(**{section.natural_key: item.key})
            obj.is_active = False
            if section is AGENTS:
                obj.is_default = False
            obj.save()
            continue
        if item.action == "create":
            obj = section.model()
        else:
            obj = section.model.objects.select_for_update().get(**{section.natural_key: item.key})
        _assign(section, obj, item.values)
        obj.save()
        if section is AGENTS and (item.action == "create" or "models" in item.changed):
            obj.chain_links.all().delete()
            names = item.values["models"]
            by_name = LLMModel.objects.in_bulk(names, field_name="name")
            AgentModel.objects.bulk_create(
                AgentModel(agent=obj, model=by_name[name], position=position)
                for position, name in enumerate(names)
            )
