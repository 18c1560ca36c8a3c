"""model-serve-spec.yaml -> :class:`ModelCatalog` of :class:`ResolvedModel`.

Everything is checked at load (start-up), so a bad spec never surfaces as a failed job later:
the model folder and its dataset.json / plans.json / fold folders, duplicate ids, aliases, the
segment descriptions against dataset.json's labels, SNOMED codes for every segment, and
``default_args`` (including its folds and checkpoint against the folder). Every error is a
:class:`~inference.errors.SpecError` naming the model.

``model_folder``: ``$OVERRIDE_MODEL_FOLDER`` if set, else the spec's value, relative to the spec
file's folder when relative. ``rel_path``: an exact path under it, or (as nnunet_serve) a substring
of exactly one model folder's path under it. Names and aliases resolve to ids; ``aliases:`` at the
top level adds aliases for any model.

``version`` (:attr:`ResolvedModel.version`) feeds the deterministic SEG UIDs:
``<algorithm_version>+<first 12 hex of the model folder fingerprint>`` (see
:mod:`inference.model_dir`), or just the 12 hex when no algorithm_version is configured. Retraining
or editing plans/dataset.json changes the UIDs; copying the folder does not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from inference.args import InferenceArgs, StageArgs, describe_validation_error, parse_args
from inference.codes import CodeBook
from inference.dcmqi import read_dcmqi_template
from inference.errors import ArgsError, SpecError, UnknownModelError
from inference.model_dir import (
    Fold,
    ModelFolder,
    channels_from_dataset,
    find_model_dir,
    labels_from_dataset,
    open_model_folder,
)
from inference.segments import (
    ARTIFICIAL_INTELLIGENCE,
    AlgorithmInfo,
    OutputFields,
    SegmentCoding,
    SegmentSpec,
)
from inference.spec_schema import (
    IGNORED_MODEL_KEYS,
    IGNORED_TOP_KEYS,
    CodeInput,
    MetadataInput,
    ModelInput,
    SpecHeader,
)
from inference.spec_segments import (
    check_label_names,
    check_template_labels,
    segments_from_entries,
    segments_from_labels,
    with_tracking_uids,
)
from inference.stage_inputs import parse_stage_input
from inference.strict_yaml import load_yaml
from inference.totalseg_tasks import TotalSegTask, describe, parse_options, resolve_task, weights_root

logger = logging.getLogger(__name__)

OVERRIDE_ENV = "OVERRIDE_MODEL_FOLDER"
_SHORT_HASH = 12


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to run and describe. Built by :func:`load_model_spec`."""

    id: str
    name: str
    aliases: tuple[str, ...]
    model_dir: Path
    dataset_json: dict[str, Any]
    labels: dict[int, str]
    channel_names: dict[int, str]
    file_ending: str
    folds: dict[Fold, tuple[str, ...]]
    min_mem: int
    default_args: InferenceArgs
    segments: dict[int, SegmentSpec]
    algorithm: AlgorithmInfo
    output: OutputFields
    version: str
    fingerprint: str
    trainer: str | None = None
    plans: str | None = None
    configuration: str | None = None
    totalseg: TotalSegTask | None = field(default=None, repr=False)

    @property
    def checkpoints(self) -> frozenset[str]:
        """Checkpoint names present in at least one fold."""
        return frozenset(name for names in self.folds.values() for name in names)

    def select_folds(self, use_folds: tuple[int, ...] | str, checkpoint_name: str) -> tuple[Fold, ...]:
        """The folds to load for a stage; :class:`ArgsError` if a fold or the checkpoint is missing.

        ``"all"`` means every ``fold_<n>`` holding the checkpoint (``fold_all`` when there are none)."""
        if use_folds == "all":
            numbered = tuple(f for f in self.folds if isinstance(f, int) and checkpoint_name in self.folds[f])
            if numbered:
                return tuple(sorted(numbered))
            if checkpoint_name in self.folds.get("all", ()):
                return ("all",)
            raise ArgsError(
                f"model {self.id!r}: no fold folder holds {checkpoint_name} ({self.model_dir})",
                key="checkpoint_name",
            )
        selected: list[Fold] = []
        for fold in use_folds:
            if fold not in self.folds:
                have = ", ".join(str(f) for f in self.folds)
                raise ArgsError(
                    f"model {self.id!r}: fold {fold} not found in {self.model_dir} (have {have})",
                    key="use_folds",
                )
            if checkpoint_name not in self.folds[fold]:
                have = ", ".join(self.folds[fold]) or "none"
                raise ArgsError(
                    f"model {self.id!r}: fold_{fold} has no {checkpoint_name} (checkpoints there: {have})",
                    key="checkpoint_name",
                )
            selected.append(fold)
        return tuple(selected)

    def check_stage(self, stage: StageArgs) -> tuple[Fold, ...]:
        return self.select_folds(stage.use_folds, stage.checkpoint_name)


@dataclass(frozen=True)
class ModelCatalog:
    """Every model of a spec, by id, with aliases."""

    models: dict[str, ResolvedModel]
    aliases: dict[str, str]
    spec_path: Path
    model_folder: Path

    def ids(self) -> list[str]:
        return list(self.models)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.models or key in self.aliases)

    def resolve(self, id_or_alias: str) -> ResolvedModel:
        """The model with this id, name or alias; :class:`UnknownModelError` lists the known ids."""
        model_id = id_or_alias if id_or_alias in self.models else self.aliases.get(id_or_alias)
        if model_id is None:
            known = ", ".join(self.ids())
            raise UnknownModelError(f"unknown model {id_or_alias!r}; known models: {known}")
        return self.models[model_id]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"model spec {path} cannot be read: {exc.strerror or exc}") from exc
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"model spec {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"model spec {path} must be a mapping with model_folder and models")
    return data


def load_model_spec(
    path: str | Path, *, environ: Mapping[str, str] | None = None, codebook: CodeBook | None = None
) -> ModelCatalog:
    """Load and check a spec file. ``environ`` defaults to ``os.environ`` (OVERRIDE_MODEL_FOLDER,
    TOTALSEG_WEIGHTS_PATH); ``codebook`` to :meth:`CodeBook.default`."""
    spec_path = Path(path).resolve()
    env = os.environ if environ is None else environ
    book = codebook or CodeBook.default()
    data = _read_yaml(spec_path)
    for key in sorted(IGNORED_TOP_KEYS & set(data)):
        logger.warning("model spec %s: %r is ignored here", spec_path, key)
        data.pop(key)
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise SpecError(f"model spec {spec_path}: 'models' must be a non-empty list")
    try:
        top = SpecHeader.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"model spec {spec_path}: {describe_validation_error(exc)}") from exc
    model_folder = _model_folder(spec_path, top.model_folder, env)

    models: dict[str, ResolvedModel] = {}
    for index, raw in enumerate(raw_models):
        entry = _validate_entry(spec_path, index, raw)
        if entry.id in models:
            raise SpecError(f"model {entry.id!r}: id used twice in {spec_path}")
        models[entry.id] = _resolve(entry, spec_path, model_folder, env, book)
    aliases = _aliases(models, top.aliases)
    _check_default_refs(models, aliases)
    logger.info("loaded %d model(s) from %s: %s", len(models), spec_path, ", ".join(models))
    return ModelCatalog(models=models, aliases=aliases, spec_path=spec_path, model_folder=model_folder)


def _check_default_refs(models: dict[str, ResolvedModel], aliases: dict[str, str]) -> None:
    """``from:<model>`` in a model's default ``series_folders`` / ``intersect_with`` / ``crop_from``
    must name a model of the spec."""
    for model in models.values():
        args = model.default_args
        refs = [item for stage in args.stage_inputs() or [] for item in stage if isinstance(item, str)]
        refs += [v for v in (args.intersect_with, args.crop_from) if isinstance(v, str)]
        for ref in refs:
            name = parse_stage_input(ref).model
            if name is not None and name not in models and name not in aliases:
                raise SpecError(f"model {model.id!r}: default_args {ref!r} names no model of the spec")


def _model_folder(spec_path: Path, configured: str, env: Mapping[str, str]) -> Path:
    override = env.get(OVERRIDE_ENV)
    folder = Path(override) if override else Path(configured).expanduser()
    if not folder.is_absolute():
        folder = spec_path.parent / folder
    return folder.resolve()


def _validate_entry(spec_path: Path, index: int, raw: Any) -> ModelInput:
    if not isinstance(raw, dict):
        raise SpecError(f"model spec {spec_path}: models[{index}] must be a mapping")
    name = raw.get("id", f"models[{index}]")
    raw = dict(raw)
    for key in sorted(IGNORED_MODEL_KEYS & set(raw)):
        logger.warning("model %r: key %r is ignored here", name, key)
        raw.pop(key)
    try:
        return ModelInput.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"model {name!r} in {spec_path}: {describe_validation_error(exc)}") from exc


def _aliases(models: dict[str, ResolvedModel], extra: dict[str, str]) -> dict[str, str]:
    aliases: dict[str, str] = {}

    def add(alias: str, model_id: str) -> None:
        if alias == model_id:
            return
        if alias in models:
            raise SpecError(f"model {model_id!r}: alias {alias!r} is the id of another model")
        if alias in aliases and aliases[alias] != model_id:
            raise SpecError(f"model {model_id!r}: alias {alias!r} is already an alias of {aliases[alias]!r}")
        aliases[alias] = model_id

    for model in models.values():
        for alias in model.aliases:
            add(alias, model.id)
    for alias, model_id in extra.items():
        if model_id not in models:
            raise SpecError(f"alias {alias!r} points to model {model_id!r}, which the spec does not define")
        add(alias, model_id)
    return aliases


def _resolve(
    entry: ModelInput, spec_path: Path, model_folder: Path, env: Mapping[str, str], book: CodeBook
) -> ResolvedModel:
    mid = entry.id
    if (entry.rel_path is None) == (entry.totalseg_task is None):
        raise SpecError(f"model {mid!r}: give exactly one of rel_path and totalseg_task")
    if entry.totalseg_options is not None and entry.totalseg_task is None:
        raise SpecError(f"model {mid!r}: totalseg_options needs totalseg_task")
    task: TotalSegTask | None = None
    if entry.totalseg_task is not None:
        try:
            options = parse_options(entry.totalseg_options)
            task = resolve_task(entry.totalseg_task, weights_root(model_folder, env), options)
        except SpecError as exc:
            raise SpecError(f"model {mid!r}: {exc}") from exc
        logger.info("model %r: %s", mid, describe(task))
        path = task.model_dir
    else:
        assert entry.rel_path is not None
        path = find_model_dir(mid, model_folder, entry.rel_path)
    folder = open_model_folder(mid, path)
    labels = labels_from_dataset(mid, folder.dataset_json)
    if task is not None:
        folder = _with_parts_fingerprint(mid, folder, task)
        labels = dict(task.labels)
    meta = entry.metadata or MetadataInput()
    segments, template_output, template_algorithm = _segments(mid, meta, spec_path, labels, task, book)
    algorithm = _algorithm(mid, meta, template_algorithm, task, folder.fingerprint, folder.path.name)
    version = _version(meta, task, folder.fingerprint)
    default_args = _default_args(entry, task, channels_from_dataset(folder.dataset_json))
    model = ResolvedModel(
        id=mid,
        name=entry.name or mid,
        aliases=tuple(dict.fromkeys([*([entry.name] if entry.name else []), *entry.aliases])),
        model_dir=folder.path,
        dataset_json=folder.dataset_json,
        labels=labels,
        channel_names=channels_from_dataset(folder.dataset_json),
        file_ending=str(folder.dataset_json.get("file_ending", ".nii.gz")),
        folds=folder.folds,
        min_mem=entry.min_mem,
        default_args=default_args,
        segments=with_tracking_uids(mid, segments),
        algorithm=algorithm,
        output=_output(meta, template_output),
        version=version,
        fingerprint=folder.fingerprint,
        trainer=folder.trainer,
        plans=folder.plans,
        configuration=folder.configuration,
        totalseg=task,
    )
    try:
        model.check_stage(default_args.for_stage(0))
    except ArgsError as exc:
        detail = str(exc).removeprefix(f"model {mid!r}: ")
        raise SpecError(f"model {mid!r}: invalid default_args: {detail}") from exc
    return model


def _with_parts_fingerprint(mid: str, folder: ModelFolder, task: TotalSegTask) -> ModelFolder:
    """A TotalSegmentator task's fingerprint covers every folder it loads (parts and crop model)."""
    others = [open_model_folder(mid, p).fingerprint for p in task.model_dirs() if p != task.model_dir]
    if not others:
        return folder
    digest = hashlib.sha256("|".join([folder.fingerprint, *others]).encode()).hexdigest()
    return dataclasses.replace(folder, fingerprint=digest)


def _segments(
    mid: str,
    meta: MetadataInput,
    spec_path: Path,
    labels: dict[int, str],
    task: TotalSegTask | None,
    book: CodeBook,
) -> tuple[dict[int, SegmentSpec], OutputFields | None, str | None]:
    if task is not None:
        check_label_names(mid, task.labels, labels, f"TotalSegmentator's class map for {task.base_task}")
    if meta.path is not None:
        if meta.segment_names is not None:
            raise SpecError(f"model {mid!r}: metadata gives both path (a dcmqi template) and segment_names")
        template_path = Path(meta.path).expanduser()
        if not template_path.is_absolute():
            template_path = spec_path.parent / template_path
        try:
            template = read_dcmqi_template(template_path)
        except SpecError as exc:
            raise SpecError(f"model {mid!r}: {exc}") from exc
        check_template_labels(mid, template.segments, labels)
        return template.segments, template.output, template.algorithm_name
    if meta.segment_names is not None:
        return segments_from_entries(mid, meta.segment_names, labels, book), None, None
    if task is not None:
        # TotalSegmentator's own SEG writer codes a class its mapping lacks as Tissue / Tissue.
        tissue = SegmentCoding(category=codes.SCT.Tissue, property_type=codes.SCT.Tissue)
        return (
            segments_from_labels(mid, labels, book, what="TotalSegmentator class", fallback=tissue),
            None,
            None,
        )
    return segments_from_labels(mid, labels, book), None, None


def _algorithm(
    mid: str,
    meta: MetadataInput,
    template_name: str | None,
    task: TotalSegTask | None,
    fingerprint: str,
    folder_name: str,
) -> AlgorithmInfo:
    name = meta.algorithm_name or template_name or ("TotalSegmentator" if task else "nnU-Net")
    version = meta.algorithm_version or (_totalseg_version() if task else None) or fingerprint[:_SHORT_HASH]
    family = ARTIFICIAL_INTELLIGENCE
    if meta.algorithm_family is not None:
        given = meta.algorithm_family
        if not isinstance(given, CodeInput) or given.meaning is None:
            raise SpecError(f"model {mid!r}: algorithm_family must be {{value, scheme, meaning}}")
        family = Code(given.value, given.scheme, given.meaning)
    source = meta.algorithm_source or f"nnU-Net v2 {folder_name}"[:64]
    return AlgorithmInfo(
        name=name, version=version, family=family, type=meta.algorithm_type or "AUTOMATIC", source=source
    )


def _totalseg_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"TotalSegmentator {version('TotalSegmentator')}"
    except PackageNotFoundError:
        return None


def _version(meta: MetadataInput, task: TotalSegTask | None, fingerprint: str) -> str:
    short = fingerprint[:_SHORT_HASH]
    base = meta.algorithm_version or (task.task if task else None)
    return f"{base}+{short}" if base else short


def _output(meta: MetadataInput, template: OutputFields | None) -> OutputFields:
    base = template or OutputFields()
    values = {
        name: getattr(meta, name) if getattr(meta, name, None) is not None else getattr(base, name)
        for name in OutputFields.__dataclass_fields__
    }
    return OutputFields(**values)


def _default_args(entry: ModelInput, task: TotalSegTask | None, channels: dict[int, str]) -> InferenceArgs:
    raw = dict(entry.default_args or {})
    if task is not None:
        # TotalSegmentator's own settings: its folds, its sliding-window step, no TTA.
        raw.setdefault("use_folds", list(task.folds) if task.folds else "all")
        raw.setdefault("tile_step_size", task.main.step_size)
        raw.setdefault("tta", False)
    try:
        args = parse_args(raw, where="default_args")
    except ArgsError as exc:
        raise SpecError(f"model {entry.id!r}: invalid {exc}") from exc
    inputs = args.stage_inputs()
    if inputs is not None and (len(inputs) != 1 or len(inputs[0]) != len(channels)):
        raise SpecError(
            f"model {entry.id!r}: invalid default_args.series_folders: one list of {len(channels)} input(s) "
            f"(the model's channels) expected, got {args.series_folders}"
        )
    if args.stage_counts():
        fields = ", ".join(args.stage_counts())
        raise SpecError(
            f"model {entry.id!r}: invalid default_args: per-stage lists ({fields}) belong in requests; "
            "a model's defaults apply to its own stage"
        )
    return args
