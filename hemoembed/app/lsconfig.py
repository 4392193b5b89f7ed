"""A Label Studio labelling config (XML) read for what hemoembed can predict: one ``<Choices>`` of an ``<Image>``.

Label Studio sends the project's config with every ``/setup`` and ``/predict`` call. hemoembed answers
for the first ``<Choices name=... toName=...>`` (not per-region) whose ``toName`` names an
``<Image name=... value="$field">`` and that lists at least one of the model's classes; the image of a task
is then ``task["data"][field]``. A model class maps to a ``<Choice>`` as Label Studio's ML backend SDK maps
labels: the Choice whose ``predicted_values`` (comma-separated) names the class, else the Choice whose
``value`` is the class, else one that equals it ignoring case. The answer carries the Choice's ``alias``
when it has one (Label Studio stores the alias in results), else its ``value``.

The XML is parsed with the standard library after refusing any document type declaration: no DTD, so no
entity of any kind (internal, external or the "billion laughs" kind) is ever expanded.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from . import lib

MAX_CONFIG_CHARS = 1_000_000


class ConfigError(lib.InputError):
    """The labelling config cannot be used (answered with 400 and one sentence)."""


@dataclass(frozen=True)
class ChoicesTarget:
    """Where predictions go: the Choices tag (``from_name``), the Image tag (``to_name``), the task field
    holding the image, and each mapped model class's Choice value."""

    from_name: str
    to_name: str
    field: str
    choices: dict[str, str]  # model class → the value Label Studio stores for its Choice

    def result(self, label: str) -> dict[str, object]:
        """One Label Studio result region choosing ``label``'s Choice."""
        return {"from_name": self.from_name, "to_name": self.to_name, "type": "choices",
                "value": {"choices": [self.choices[label]]}}


def parse_config(text: object, classes: list[str]) -> ChoicesTarget:
    """The :class:`ChoicesTarget` of a labelling config for a model of ``classes`` (:class:`ConfigError` if
    the config is not safe XML, has no Choices of an Image, or lists none of the classes)."""
    root = _parse_xml(text)
    images = {tag.get("name"): tag.get("value", "") for tag in root.iter() if tag.tag == "Image" and tag.get("name")}
    if not images:
        raise ConfigError('the labelling config has no <Image name="..." value="$field"> tag')
    candidates = []
    for tag in root.iter():
        if tag.tag != "Choices" or tag.get("perRegion", "").lower() == "true" or not tag.get("name"):
            continue
        targets = [name.strip() for name in (tag.get("toName") or "").split(",") if name.strip() in images]
        if targets:
            candidates.append((tag, targets[0]))
    if not candidates:
        raise ConfigError("the labelling config has no <Choices> whose toName names an <Image>")
    for tag, image in candidates:
        choices = _class_map(tag, classes)
        if choices:
            value = images[image]
            if not value.startswith("$") or len(value) < 2:
                raise ConfigError(f'<Image name="{image}"> must take its image from a task field (value="$image")')
            return ChoicesTarget(tag.get("name"), image, value[1:], choices)
    names = ", ".join(tag.get("name") for tag, _ in candidates)
    raise ConfigError(f"no <Choice> of <Choices> {names} is one of the model's classes ({', '.join(classes)}); "
                      'name them as the model does or map them with predicted_values="class"')


def _class_map(tag: ET.Element, classes: list[str]) -> dict[str, str]:
    """Model class → stored Choice value for the Choice children of one Choices tag (SDK's mapping rules)."""
    mapping: dict[str, str] = {}
    lower = {c.lower(): c for c in classes}
    for choice in tag.iter("Choice"):
        value = choice.get("value")
        if value is None:
            continue
        stored = choice.get("alias") or value
        named = [v.strip() for v in (choice.get("predicted_values") or "").split(",") if v.strip() in classes]
        if not named and value.lower() in lower:
            named = [value if value in classes else lower[value.lower()]]
        for cls in named:
            mapping.setdefault(cls, stored)
    return mapping


def _parse_xml(text: object) -> ET.Element:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the labelling config (label_config) is missing or empty")
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(f"the labelling config is too long ({len(text)} characters; at most {MAX_CONFIG_CHARS})")
    checker = expat.ParserCreate()

    def refuse(*_args) -> None:
        raise ConfigError("the labelling config declares a DTD or entities, which are refused")

    checker.StartDoctypeDeclHandler = refuse
    checker.EntityDeclHandler = refuse
    try:
        checker.Parse(text, True)
        return ET.fromstring(text)
    except (expat.ExpatError, ET.ParseError) as exc:
        raise ConfigError(f"the labelling config is not well-formed XML ({lib.one_line(str(exc))})") from None
