"""The package's shape: the import rule between layers, no private names across modules, a light import."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "hemoembed"
# Each layer may import itself and the layers listed for it; the shared top-level modules are open to all.
ALLOWED = {
    "data": {"data"},
    "model": {"data", "model"},
    "store": {"data", "model", "store"},
    "tasks": {"data", "model", "store", "tasks"},
    "explain": {"data", "model", "store", "tasks", "explain"},
    "app": {"data", "model", "store", "tasks", "explain", "app"},
    "cli": {"data", "model", "store", "tasks", "explain", "app", "cli"},
}
SHARED = {"config", "errors", "lazy", "plotting", "progress", "_version", "_quiet"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_layers_import_only_the_layers_below_them():
    wrong = []
    for name, path in _modules():
        layer = _layer(name)
        for module, names, line in _imports(name, path):
            if not module.startswith("hemoembed."):
                continue
            for target in [f"hemoembed.{n}" for n in names] if module == "hemoembed" else [module]:
                other = _layer(target)
                if layer in ALLOWED and other not in ALLOWED[layer] | SHARED:
                    wrong.append(f"{path.relative_to(REPO)}:{line} ({layer}/) imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_rule_catches_data_model_or_store_importing_tasks():
    for layer in ("data", "model", "store"):
        assert "tasks" not in ALLOWED[layer]


def test_no_module_imports_a_private_name_of_another():
    wrong = []
    for name, path in _modules():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, names, line in _imports(name, path):
            if not module.startswith("hemoembed"):
                continue
            private_module = [p for p in module.split(".") if p.startswith("_") and not p.startswith("__")]
            shared = module.rpartition(".")[2] in SHARED and module.count(".") == 1
            if private_module and not shared and module.rpartition(".")[0] != package:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports private module {module}")
            wrong += [f"{path.relative_to(REPO)}:{line} imports {module}.{n}" for n in names
                      if n.startswith("_") and not n.startswith("__")]
    assert not wrong, "\n".join(wrong)


def _fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**environment, **env})


def test_import_hemoembed_and_help_load_no_tensorflow():
    code = ("import sys, runpy\n"
            "import hemoembed\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'sklearn', 'openTSNE', 'pyarrow') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "hemoembed.InputError, hemoembed.__version__\n"
            "sys.argv = ['hemoembed', '--help']\n"
            "try:\n"
            "    runpy.run_module('hemoembed', run_name='__main__')\n"
            "except SystemExit as stop:\n"
            "    assert stop.code in (0, None), stop.code\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'sklearn', 'openTSNE', 'pyarrow') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print('LIGHT')\n")
    run = _fresh(code)
    assert run.returncode == 0 and "LIGHT" in run.stdout and "fit-svm" in run.stdout, run.stderr[-1500:]


REGISTERED = ("import sys\n"
              "for name in ('L2Normalize', 'PreprocessingSpec', 'ReinhardNormalization', 'GrayWorld',\n"
              "             'TripletSemiHardLoss', 'TripletHardLoss'):\n"
              "    assert keras.saving.get_registered_object('hemoembed>' + name) is not None, name\n"
              "print('REGISTERED', 'tensorflow' in sys.modules)\n")


def test_keras_loaded_after_import_hemoembed_has_its_objects_and_tensorflow_stays_quiet():
    """Registration happens when Keras loads (hemoembed.model registers); TensorFlow's start-up chatter
    stays off stderr (TF_CPP_MIN_LOG_LEVEL unset here)."""
    run = _fresh("import hemoembed, keras\n" + REGISTERED)
    assert run.returncode == 0 and "REGISTERED True" in run.stdout, run.stderr[-1500:]
    assert run.stderr.strip() == "", run.stderr[-800:]


# (command words after the images folder {cells}; words expected in the error) — each needs no model to refuse
BEFORE_TENSORFLOW = [
    (["pretrain", "{cells}", "--out", "{tmp}/run", "--head", "banana"], "--head 'banana'"),
    (["pretrain", "{cells}", "--out", "{tmp}/run", "--crop-scale", "2,3"], "crop scale"),
    (["pretrain", "{cells}", "--out", "{cells}"], "is the input folder"),
    (["embed", "{tmp}/enc.keras", "{cells}", "--store", "{tmp}/labels.csv"], "exists and is not a folder"),
    (["embed", "{tmp}/enc.keras", "{cells}", "--store", "{tmp}/store", "--metadata", "ward"], "no column 'ward'"),
    (["embed", "{tmp}/enc.keras", "{cells}", "--store", "{tmp}"], "contains the input folder"),
]


@pytest.mark.parametrize("words,expected", BEFORE_TENSORFLOW,
                         ids=[" ".join(w[:1] + w[-2:]) for w, _ in BEFORE_TENSORFLOW])
def test_an_option_error_is_found_before_tensorflow_loads(tmp_path, words, expected):
    """A typo in an option is a one-line error at once, not after TensorFlow's seconds of import: pretraining
    configurations (presets, augmentation, head, loss) and embedding targets are checked without Keras."""
    from PIL import Image

    (tmp_path / "cells").mkdir()
    Image.new("RGB", (40, 40), (200, 120, 160)).save(tmp_path / "cells" / "cell.png")
    (tmp_path / "labels.csv").write_text("path,label\ncell.png,a\n")
    argv = [w.format(cells=tmp_path / "cells", tmp=tmp_path) for w in words]
    code = ("import sys\n"
            "from hemoembed.cli import main\n"
            f"sys.argv = ['hemoembed', *{argv!r}]\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as stop:\n"
            "    print('EXIT', stop.code)\n"
            "print('HEAVY', [m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules])\n")
    run = _fresh(code)
    assert "EXIT 2" in run.stdout and "HEAVY []" in run.stdout, run.stdout + run.stderr[-1500:]
    assert expected in run.stderr and run.stderr.count("\n") == 1, run.stderr


def test_configuration_modules_load_no_tensorflow():
    for module in ("hemoembed.model.pretrain", "hemoembed.model.pretrain_config", "hemoembed.data.augment_config",
                   "hemoembed.store.build"):
        light = _fresh(f"import sys, {module}\nprint('HEAVY', [m for m in ('tensorflow', 'keras') "
                       "if m in sys.modules])")
        assert "HEAVY []" in light.stdout, (module, light.stderr[-1500:])


@pytest.mark.slow
@pytest.mark.parametrize("first", ["import keras, hemoembed", "from hemoembed import load_encoder; import keras"])
def test_hemoembed_keras_objects_are_registered_whichever_loads_first(first):
    run = _fresh(f"{first}\n" + REGISTERED)
    assert run.returncode == 0 and "REGISTERED" in run.stdout, run.stderr[-1500:]


@pytest.mark.parametrize("choose,expected", [
    ("", "agg"),
    ("import matplotlib; matplotlib.use('pdf')", "pdf"),
    ("import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot", "svg"),
])
def test_plotting_never_switches_a_chosen_backend(choose, expected):
    run = _fresh(f"{choose}\nimport matplotlib\nfrom hemoembed.plotting import pyplot\nimport hemoembed.explain.plots\n"
                 "pyplot()\nprint('BACKEND', matplotlib.get_backend().lower())\n", MPLBACKEND="")
    assert run.returncode == 0, run.stderr[-800:]
    assert f"BACKEND {expected}" in run.stdout
