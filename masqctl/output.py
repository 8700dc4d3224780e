"""Machine-readable output: an API message as canonical protobuf JSON, or the same as YAML.

JSON is `json_format.MessageToJson` (lowerCamelCase names, enums by name, RFC 3339 timestamps,
durations as "1.5s"), with fields at their default value printed too, so a script reading
`.families[0].inSync` gets `false` rather than nothing. YAML is the same dictionary.
"""

from __future__ import annotations

from typing import Any

FORMATS = ("table", "json", "yaml")


def to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def to_json(message: Any, *, compact: bool = False) -> str:
    """Canonical protobuf JSON; compact is one line (for a stream of events)."""
    from google.protobuf import json_format

    return json_format.MessageToJson(
        message, indent=None if compact else 2, always_print_fields_with_no_presence=True
    )


def to_yaml(data: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def render_data(data: dict[str, Any], fmt: str) -> str:
    """A plain dictionary (for answers that are not API messages) as JSON or YAML."""
    if fmt == "json":
        import json

        return json.dumps(data, indent=2)
    if fmt == "yaml":
        return to_yaml(data).rstrip("\n")
    raise ValueError(f"no machine format {fmt!r}")


def render(message: Any, fmt: str, *, stream: bool = False) -> str:
    """The message in the json or yaml format; stream: one JSON line or one YAML document."""
    if fmt == "json":
        return to_json(message, compact=stream)
    if fmt == "yaml":
        return ("---\n" if stream else "") + to_yaml(to_dict(message)).rstrip("\n")
    raise ValueError(f"no machine format {fmt!r}")
