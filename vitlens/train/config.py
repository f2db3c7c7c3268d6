"""Run configuration: a packaged or user YAML file, then ``section.key=value`` overrides."""
from __future__ import annotations

import copy
import difflib
import functools
from pathlib import Path
from typing import Any, Iterable

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_configs() -> list[str]:
    """Names of the YAML configs packaged in ``vitlens/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a config and apply overrides.

    Args:
        name_or_path: a packaged config name (see :func:`list_configs`) or a YAML file path.
        overrides: ``"section.key=value"`` strings; values are parsed as YAML (``optim.lr=3e-4``,
            ``augment.hflip=false``, ``model.img_size=[32,32]``).
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"no config {name_or_path!r}: not a file, and not one of the packaged "
                                    f"configs ({', '.join(list_configs())})")
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    return apply_overrides(config, overrides)


def compiles(setting: Any) -> bool:
    """Whether a ``train.compile`` value asks for torch.compile (``vitlens.train.loop.compile_model`` says how)."""
    return setting not in (None, False, "false", "eager")


# Keys the training loop reads beyond those the packaged configs spell out. The model section is open: its keys
# are constructor arguments (VisionTransformer or timm), which reject unknown names themselves.
EXTRA_KEYS = {"data": {"num_classes"}}


@functools.cache  # the packaged files do not change while a process runs; sweeps load configs many times
def known_keys() -> dict[str, frozenset[str]]:
    """Every ``section.key`` the packaged configs use, plus :data:`EXTRA_KEYS`."""
    known: dict[str, set[str]] = {k: set(v) for k, v in EXTRA_KEYS.items()}
    for path in CONFIG_DIR.glob("*.yaml"):
        for section, body in (yaml.safe_load(path.read_text()) or {}).items():
            known.setdefault(section, set()).update(body if isinstance(body, dict) else ())
    return {k: frozenset(v) for k, v in known.items()}


def _check_key(item: str, section: str, leaf: str) -> None:
    """A typo (``train.ema_decy``) would otherwise be stored and silently ignored."""
    known = known_keys()
    if section == "model" or leaf in known.get(section, ()):
        return
    names = sorted(f"{sec}.{k}" for sec, keys in known.items() for k in keys)
    close = difflib.get_close_matches(f"{section}.{leaf}", names, n=3)
    raise ValueError(f"override {item!r}: unknown key {section}.{leaf}"
                     + (f"; did you mean {' or '.join(close)}?" if close else f"; known keys: {', '.join(names)}"))


def apply_overrides(config: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``config`` with ``"a.b=value"`` overrides applied (values parsed as YAML); keys outside the
    ``model`` section must be ones the training loop reads."""
    config = copy.deepcopy(config)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        *parents, leaf = key.split(".")
        if len(parents) == 1:
            _check_key(item, parents[0], leaf)
        node = config
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        parsed = yaml.safe_load(value)
        # one override sets one value: a mapping can only be YAML reading a colon in a name (data.dataset=timm:)
        node[leaf] = value if isinstance(parsed, dict) else parsed
    return config
