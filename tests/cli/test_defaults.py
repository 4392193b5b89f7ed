"""The command line's defaults are the library's: a click option that fills a config field shows (and
passes) the field's own default, so a default measured and changed in one place cannot drift in the other.

The CLI keeps its defaults as literals so that ``hemoembed --help`` and bad-input errors need no
scikit-learn or TensorFlow import; this test is what ties the two spellings together."""
from __future__ import annotations

import dataclasses

import click
import pytest

from hemoembed.cli import main
from hemoembed.explain.tsne import TsneConfig
from hemoembed.store.embed import EmbedConfig
from hemoembed.tasks.active import ActiveConfig, SessionConfig
from hemoembed.tasks.adapt import AdaptConfig
from hemoembed.tasks.baseline import BaselineConfig
from hemoembed.tasks.probe import ProbeConfig
from hemoembed.tasks.svm import DEFAULT_C, FitSVMConfig, PredictConfig

# command -> (config class, {option name: config field} where the names differ)
PAIRS = [
    ("fit-svm", FitSVMConfig, {"c_values": "C", "bootstrap": "n_bootstrap"}),
    ("predict", PredictConfig, {}),
    ("baseline", BaselineConfig, {"bootstrap": "n_bootstrap"}),
    ("active-learn", ActiveConfig, {}),
    ("active-learn", SessionConfig, {}),
    ("adapt", AdaptConfig, {"bootstrap": "n_bootstrap", "curve": "curve_shots"}),
    ("probe", ProbeConfig, {}),
    ("tsne", TsneConfig, {}),
    ("embed", EmbedConfig, {}),
]
# options whose default stands for something else than the field's value: "all" columns, every condition,
# and a strategy list of which a session takes the first
MEANING_ALL = {("fit-svm", "columns"), ("adapt", "conditions"), ("active-learn", "strategy")}


def _field_default(field: dataclasses.Field):
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def _as_field(value, like):
    """An option's default as the command turns it into the field's type (comma lists into lists)."""
    if isinstance(like, list):
        kind = type(like[0]) if like else str
        return [kind(v.strip()) for v in str(value).split(",") if v.strip()]
    return value


def _checked(command: str, config) -> list[tuple[str, object, object]]:
    fields = {f.name: f for f in dataclasses.fields(config)}
    renamed = next(r for c, k, r in PAIRS if c == command and k is config)
    rows = []
    for param in main.commands[command].params:
        name = renamed.get(param.name, param.name)
        if (not isinstance(param, click.Option) or param.is_flag or param.multiple or param.required
                or param.default is None or name not in fields or (command, param.name) in MEANING_ALL):
            continue
        wanted = _field_default(fields[name])
        rows.append((param.opts[0], _as_field(param.default, wanted), wanted))
    return rows


@pytest.mark.parametrize("command,config", [(c, k) for c, k, _ in PAIRS], ids=lambda v: getattr(v, "__name__", v))
def test_every_option_default_is_its_config_fields_default(command, config):
    rows = _checked(command, config)
    assert rows, f"{command}: no option matched a field of {config.__name__}"
    wrong = [f"{option} {shown!r} but {config.__name__} has {wanted!r}"
             for option, shown, wanted in rows if shown != wanted]
    assert not wrong, f"{command}: " + "; ".join(wrong)


def test_fit_svms_C_is_the_measured_default():
    assert _as_field(next(p for p in main.commands["fit-svm"].params if p.name == "c_values").default,
                     [0.0]) == [DEFAULT_C]
