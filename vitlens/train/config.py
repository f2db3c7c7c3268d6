"""Run configuration: typed sections with their defaults, read from a packaged or user YAML file, then
``section.key=value`` overrides.

Every default lives in the dataclasses below; the packaged YAML files spell the recipes out in full, but a file may
leave out any key that has a default. Each section checks its values when it is built, so a config that loads is
one the training loop can run: an unknown key (``train.ema_decy``) or a value of the wrong type is refused with the
key's name before any data or model is built.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, Mapping, get_args, get_type_hints

import yaml

from ..fields import check_value, short

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True, kw_only=True)
class Section:
    """A config section: each field is converted to and checked against its annotation when the section is built
    (a YAML string such as ``3e-3``, which YAML 1.1 does not read as a number, becomes a float)."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for f in fields(self):
            value = _check(f"{self.section}.{f.name}", getattr(self, f.name), hints[f.name])
            object.__setattr__(self, f.name, value)  # frozen: the converted value replaces the given one once
        self.validate()

    def validate(self) -> None:
        """Checks that involve more than one field or a range; each raises ValueError naming the key."""

    def require(self, key: str, ok: bool, what: str) -> None:
        """Refuse the value of ``key`` unless ``ok``: ValueError naming the key, what it must be, and the value."""
        if not ok:
            raise ValueError(f"{self.section}.{key} must be {what}, got {short(getattr(self, key))}")

    def require_positive(self, *keys: str, optional: bool = False) -> None:
        """Each of ``keys`` must be above zero (or null when ``optional``): a count of steps, images, processes."""
        for key in keys:
            value = getattr(self, key)
            self.require(key, (optional and value is None) or (value is not None and value > 0),
                         "a positive integer" + (" or null" if optional else ""))


@dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    """What to train and evaluate on (see :func:`vitlens.data.build_dataset`).

    Args:
        dataset: ``fashion_mnist``, ``cifar10``, ``cifar100``, ``folder``, ``synthetic`` or ``timm:<name>``.
        data_dir: where the files are (Fashion-MNIST: else ``$VITLENS_DATA``, the Debian package, a download).
        subset: train on the first N training images.
        eval_subset: evaluate on the first N test images.
        mean: per-channel normalisation; None: the dataset's statistics for a fresh model, the source model's
            preprocessing for a fine-tuning start.
        std: as ``mean``.
        workers: DataLoader workers per process; ``auto``: 0 on CPU for in-memory datasets, else up to 8.
        num_classes: classes of the head; None: counted from the training split.
    """

    section: ClassVar[str] = "data"
    dataset: str
    data_dir: str | None = None
    subset: int | None = None
    eval_subset: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    workers: Literal["auto"] | int = "auto"
    num_classes: int | None = None

    def validate(self) -> None:
        self.require_positive("subset", "eval_subset", "num_classes", optional=True)
        self.require("workers", self.workers == "auto" or self.workers >= 0, "'auto' or an integer >= 0")
        self.require("std", self.std is None or all(s > 0 for s in self.std), "null or a list of positive numbers")


@dataclass(frozen=True, kw_only=True)
class AugmentConfig(Section):
    """Training augmentation and label smoothing (see :func:`vitlens.data.build_transform`).

    Args:
        crop_padding: pad-and-crop by this many pixels (small-image datasets).
        hflip: random horizontal flips; None: the pipeline's own default (on for natural images through timm,
            off for small images).
        rand_augment: a timm RandAugment string such as ``rand-m9-mstd0.5``.
        random_erasing: timm RandomErasing probability.
        mixup: mixup alpha (timm ``Mixup``); 0: off.
        cutmix: CutMix alpha; 0: off.
        label_smoothing: label-smoothing factor.
    """

    section: ClassVar[str] = "augment"
    crop_padding: int = 0
    hflip: bool | None = None
    rand_augment: str | None = None
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0

    def validate(self) -> None:
        self.require("crop_padding", self.crop_padding >= 0, "an integer >= 0")
        self.require("random_erasing", 0 <= self.random_erasing <= 1, "a probability between 0 and 1")
        self.require("mixup", self.mixup >= 0, "an alpha >= 0 (0: off)")
        self.require("cutmix", self.cutmix >= 0, "an alpha >= 0 (0: off)")
        self.require("label_smoothing", 0 <= self.label_smoothing < 1, "a number in [0, 1)")

    def transform_options(self) -> dict[str, Any]:
        """The options :func:`vitlens.data.build_transform` reads; an unset ``hflip`` is left out so the pipeline
        applies its own default."""
        options = dict(crop_padding=self.crop_padding, hflip=self.hflip, rand_augment=self.rand_augment,
                       random_erasing=self.random_erasing)
        return {k: v for k, v in options.items() if not (k == "hflip" and v is None)}


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Section):
    """The optimizer (timm's ``create_optimizer_v2``; no weight decay on biases and norms).

    Args:
        name: a timm optimizer name: ``adamw`` (pre-training), ``momentum`` (SGD with classical momentum, fine-tuning).
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        betas: Adam's betas (Adam-family optimizers only).
        momentum: SGD momentum (momentum optimizers only).
        clip_grad: global gradient-norm clip; None or 0: no clipping.
    """

    section: ClassVar[str] = "optim"
    name: str = "adamw"
    lr: float
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    clip_grad: float | None = None

    def validate(self) -> None:
        self.require("lr", self.lr > 0, "a positive number")  # 0 would save the starting weights as "trained"
        self.require("weight_decay", self.weight_decay >= 0, "a number >= 0")
        self.require("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                     "two numbers in [0, 1)")
        self.require("momentum", 0 <= self.momentum < 1, "a number in [0, 1)")
        self.require("clip_grad", self.clip_grad is None or self.clip_grad >= 0, "null or a number >= 0")


Decay = Literal["cosine", "linear"]
DECAYS = get_args(Decay)


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig(Section):
    """The learning-rate schedule (paper App. B): linear warm-up to ``optim.lr``, then decay to ``min_lr``.

    Args:
        warmup_steps: optimizer steps of linear warm-up.
        decay: ``cosine`` or ``linear``.
        min_lr: the learning rate at the last step.
    """

    section: ClassVar[str] = "schedule"
    warmup_steps: int = 0
    decay: Decay = "cosine"
    min_lr: float = 0.0

    def validate(self) -> None:
        self.require("warmup_steps", self.warmup_steps >= 0, "an integer >= 0")
        self.require("min_lr", self.min_lr >= 0, "a number >= 0")


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Section):
    """The run: budget, batch, precision, checkpoints, logging.

    Args:
        epochs: passes over the training set (unless ``steps`` is set).
        steps: total optimizer steps; overrides ``epochs``.
        batch_size: the global batch: processes x ``accum_steps`` x per-process batch.
        accum_steps: gradient-accumulation micro-batches per step.
        seed: initial weights (the same on every rank), data order and augmentation (per rank).
        amp: bf16 autocast; ``auto``: on CUDA only.
        compile: torch.compile: false, true, ``tuned`` or a torch.compile mode (see ``compile_model``).
        ema_decay: Polyak averaging of the weights (timm ``ModelEmaV3``); None: off.
        ckpt_every: steps between checkpoints.
        keep_last: checkpoints kept; 0: all.
        log_every: steps between ``metrics.jsonl`` records.
        eval: evaluate on the test split after each epoch (monitoring only, no model selection).
        stop_at: stop with a checkpoint at this step; continue later with ``--resume``.
        threads: CPU threads per process; None: torch's default.
        device: ``cuda``, ``cpu``...; None: CUDA when available.
    """

    section: ClassVar[str] = "train"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int
    accum_steps: int = 1
    seed: int = 0
    amp: Literal["auto"] | bool = "auto"
    compile: bool | str | None = False
    ema_decay: float | None = None
    ckpt_every: int = 1000
    keep_last: int = 3
    log_every: int = 20
    eval: bool = True
    stop_at: int | None = None
    threads: int | None = None
    device: str | None = None

    def validate(self) -> None:
        # A run of zero or fewer steps would save its untouched initial weights as a trained model.
        self.require_positive("epochs", "steps", "stop_at", "threads", optional=True)
        self.require_positive("batch_size", "accum_steps", "ckpt_every", "log_every")
        if self.steps is None and self.epochs is None:
            raise ValueError("set train.epochs or train.steps")
        self.require("keep_last", self.keep_last >= 0, "an integer >= 0 (0: keep all)")
        self.require("ema_decay", self.ema_decay is None or 0 <= self.ema_decay < 1, "null or a number in [0, 1)")
        self.require("batch_size", self.batch_size % self.accum_steps == 0,
                     f"a multiple of train.accum_steps ({self.accum_steps})")


SECTIONS: dict[str, type[Section]] = {cls.section: cls for cls in (DataConfig, AugmentConfig, OptimConfig,
                                                                  ScheduleConfig, TrainConfig)}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A whole run's config; ``to_dict`` gives the YAML shape (sections as mappings) the run folder keeps.

    Args:
        name: the run's name (its default folder is ``runs/<name>-<time>``).
        model: constructor arguments, kept open: ``arch`` (``vit`` with VisionTransformer fields, a
            :func:`vitlens.create_model` name or a timm CNN) or ``source`` (anything :func:`vitlens.load_model`
            accepts) and ``img_size``; the constructors refuse unknown names themselves.
    """

    name: str = "run"
    model: dict[str, Any]
    data: DataConfig
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Build and check a config from its YAML shape; a missing section or key with a default takes it."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"a config is a mapping of sections ({', '.join(REQUIRED)}, ...), got a "
                             f"{type(raw).__name__}")
        for key, body in raw.items():
            if key in SECTIONS and isinstance(body, Mapping):
                for leaf in body:
                    field_type(key, leaf)
            elif key not in SECTIONS and key not in ("name", "model"):
                raise ValueError(_unknown(key))
        if missing := [key for key in REQUIRED if key not in raw]:
            raise ValueError(f"missing section{'s' * (len(missing) > 1)} {', '.join(missing)}: a config needs "
                             f"{', '.join(REQUIRED)} (the packaged ones in {CONFIG_DIR} spell out every key)")
        name = _check("name", raw.get("name", "run"), str)
        if not isinstance(raw["model"], Mapping):
            raise ValueError(f"model must be a mapping of constructor arguments, got {short(raw['model'])}")
        check_model_section(raw["model"])
        # a section whose keys are all commented out reads as None
        sections = {key: _section(cls_, {} if raw.get(key) is None else raw[key]) for key, cls_ in SECTIONS.items()}
        return cls(name=name, model=dict(raw["model"]), **sections)

    def to_dict(self) -> dict[str, Any]:
        """The YAML shape: ``name``, then each section as a mapping."""
        return dataclasses.asdict(self)


def check_model_section(model: Mapping[str, Any]) -> None:
    """The open ``model`` section checked against the constructor that will take it, before anything is built:
    VisionTransformer's fields for ``arch: vit``, a :func:`vitlens.create_model` name or a ``source`` (whose fields
    reach ``load_model``), :func:`vitlens.create_cnn`'s own for a timm CNN (timm checks the rest itself). An unknown
    field gets a suggestion; a value of the wrong type names the key and the type."""
    from ..models.cnn import create_cnn
    from ..models.configs import CONFIG_FIELDS, MODEL_CONFIGS
    from ..models.vit import VisionTransformer

    own = {"arch": str, "source": str}
    arch = model.get("arch", "vit")
    if "source" in model or arch == "vit" or arch in MODEL_CONFIGS:
        hints, fields_ = {**_type_hints(VisionTransformer.__init__), **own}, [*CONFIG_FIELDS, *own]
    else:
        hints, fields_ = {**_type_hints(create_cnn), **own}, None  # timm's own keyword arguments are open
    for key, value in model.items():
        if fields_ is not None and key not in fields_:
            close = difflib.get_close_matches(key, fields_, n=3)
            raise ValueError(f"unknown key model.{key}" + (f"; did you mean {' or '.join(f'model.{c}' for c in close)}?"
                                                            if close else f"; the model takes {', '.join(fields_)}"))
        if key in hints:
            _check(f"model.{key}", value, hints[key])


# The sections a config must name: their fields include one without a default (model is the open one).
REQUIRED = ("model", "data", "optim", "train")


def _section(cls: type[Section], body: Any) -> Section:
    if not isinstance(body, Mapping):
        raise ValueError(f"{cls.section} must be a mapping of keys, got {short(body)}")
    for f in fields(cls):
        if f.name not in body and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing key {cls.section}.{f.name}")
    return cls(**body)


# ---- values and keys --------------------------------------------------------------------------------
def _check(key: str, value: Any, hint: Any) -> Any:
    """A config value checked against its field's annotation; YAML may give a number as text (``3e-3``)."""
    return check_value(key, value, hint, numbers_from_text=True)


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def known_keys() -> list[str]:
    """Every ``section.key`` a config may set outside the open ``model`` section."""
    return sorted(f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls))


def _unknown(key: str) -> str:
    names = known_keys()
    close = difflib.get_close_matches(key, names, n=3)
    return f"unknown key {key}" + (f"; did you mean {' or '.join(close)}?" if close
                                   else f"; known keys: {', '.join(names)}")


def field_type(section: str, key: str) -> Any:
    """The annotation of ``section.key``; a typo (``train.ema_decy``) would otherwise be silently ignored."""
    cls = SECTIONS.get(section)
    hint = _type_hints(cls).get(key) if cls is not None and key in {f.name for f in fields(cls)} else None
    if hint is None:
        raise ValueError(_unknown(f"{section}.{key}"))
    return hint


# ---- files and overrides ----------------------------------------------------------------------------
def list_configs() -> list[str]:
    """Names of the YAML configs packaged in ``vitlens/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a config, apply overrides and check the result.

    Args:
        name_or_path: a packaged config name (see :func:`list_configs`) or a YAML file path (a run folder's
            ``config.yaml`` too).
        overrides: ``"section.key=value"`` strings; values are parsed as YAML (``optim.lr=3e-4``,
            ``augment.hflip=false``, ``model.img_size=[32,32]``).
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"no config {str(name_or_path)!r}: not a file, and not one of the packaged "
                                    f"configs ({', '.join(list_configs())})")
    try:
        cfg = RunConfig.from_dict(_read_yaml(path))
    except ValueError as e:  # the file alone: an override's own mistakes are named as the override's below
        raise ValueError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides)


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; ValueError in one line for a folder, an unreadable, binary or empty file, or
    a syntax error (with its line and column)."""
    if path.is_dir():
        raise ValueError("a folder, not a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:  # reading, not writing: the input is at fault
        raise ValueError(f"unreadable: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError("not a text (YAML) file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"not valid YAML: {getattr(e, 'problem', None) or 'syntax error'}{where}") from None
    if raw is None:
        raise ValueError(f"empty; a config is a mapping of sections ({', '.join(REQUIRED)}, ...): start from a "
                         f"packaged one in {CONFIG_DIR}")
    return raw


def apply_overrides(cfg: RunConfig | Mapping[str, Any], overrides: Iterable[str]) -> RunConfig:
    """``cfg`` (a RunConfig or its YAML shape) with ``"section.key=value"`` overrides applied, checked."""
    return RunConfig.from_dict(_overridden(cfg.to_dict() if isinstance(cfg, RunConfig) else cfg, overrides))


def _overridden(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the YAML shape ``raw`` with each override's key and value checked and set."""
    config = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {short(item)} is not of the form section.key=value")
        parsed = yaml.safe_load(value)
        # one override sets one value: a mapping can only be YAML reading a colon in a name (data.dataset=timm:)
        parsed = value if isinstance(parsed, dict) else parsed
        try:
            parsed = _checked_override(key, parsed)
        except ValueError as e:
            raise ValueError(f"override {short(item)}: {e}") from None
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {short(item)}: {part!r} is not a section")
        node[leaf] = parsed
    return config


def _checked_override(key: str, value: Any) -> Any:
    """An override's value converted to its key's type; the open ``model`` section is checked as a whole, once the
    architecture it builds is known (:func:`check_model_section`)."""
    *parents, leaf = key.split(".")
    if parents[:1] == ["model"]:
        return value
    if key == "name":
        return _check(key, value, str)
    if len(parents) != 1:
        raise ValueError(_unknown(key))
    return _check(key, value, field_type(parents[0], leaf))


def compiles(setting: Any) -> bool:
    """Whether a ``train.compile`` value asks for torch.compile (:func:`vitlens.train.compile_model` says how)."""
    return setting not in (None, False, "false", "eager")
