"""A request's models and arguments checked against the model catalog, before anything runs.

:func:`plan_request` turns models + arguments into cascade stages (raising at the first problem); the
pipeline plans every request with it. :func:`request_problems` runs the same checks but collects every
problem, each naming the argument at fault: the node checks each routing rule with it when the
configuration loads and on every hot reload, so that a rule that passes never fails a job for a reason
known at load. Torch-free (the HTTP API and the configuration loader import it).

Checked: argument names and types (:func:`inference.args.args_problems`), the arguments laid over each
model's ``default_args``, per-stage list lengths against the number of stages, folds and checkpoints
present in each model folder, the cascade's inputs (channel counts, ``from:`` references).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inference.args import InferenceArgs, StageArgs, args_problems, merge, parse_args
from inference.cascade import Stage, plan_stages
from inference.errors import ArgsError, InferenceError, PredictionError, UnknownModelError
from inference.spec import ModelCatalog


@dataclass(frozen=True)
class Problem:
    """One reason a request cannot run. ``key``: the argument at fault (None: the models or inputs)."""

    key: str | None
    message: str

    def describe(self) -> str:
        return f"args.{self.key}: {self.message}" if self.key else self.message


def _stage_args_factory(
    catalog: ModelCatalog, request_args: InferenceArgs, raw: Mapping[str, Any]
) -> Callable[[str, int | None], StageArgs]:
    per_stage = set(request_args.stage_counts())
    shared = {k: v for k, v in raw.items() if k not in per_stage}

    def stage_args(model_id: str, index: int | None) -> StageArgs:
        model = catalog.resolve(model_id)
        if index is None:  # a stage inserted for a from: reference: its defaults, shared arguments
            return merge(model.default_args, shared).for_stage(0)
        return merge(model.default_args, raw).for_stage(index)

    return stage_args


def plan_request(
    catalog: ModelCatalog,
    models: Sequence[str],
    args: Mapping[str, Any],
    *,
    n_series: int,
    stage_inputs: Sequence[Sequence[str | int]] | None = None,
    save_probabilities: bool = False,
) -> list[Stage]:
    """The stages of a request, each model's folds and checkpoint checked; raises
    :class:`~inference.errors.InferenceError` (``ArgsError`` naming its key where one is at fault)."""
    request_args = parse_args(args, where="request arguments")
    request_args.check_stages(len(models))
    derived = _stage_inputs(catalog, models, request_args) if stage_inputs is None else None
    from_args = derived is not None
    if stage_inputs is None:
        stage_inputs = derived
    try:
        stages = plan_stages(
            models,
            n_series=n_series,
            channels=lambda m: len(catalog.resolve(m).channel_names),
            canonical=lambda m: catalog.resolve(m).id,
            stage_args=_stage_args_factory(catalog, request_args, args),
            stage_inputs=stage_inputs,
            save_probabilities=save_probabilities,
        )
    except (PredictionError, UnknownModelError) as exc:
        if from_args:  # the inputs came from series_folders (the request's or a model's default)
            raise ArgsError(str(exc), key="series_folders") from exc
        raise
    for stage in stages:
        catalog.resolve(stage.model).check_stage(stage.args)
    return stages


def _stage_inputs(
    catalog: ModelCatalog, models: Sequence[str], args: InferenceArgs
) -> list[list[int | str]] | None:
    """Stage inputs from ``series_folders``: the request's, else each model's ``default_args`` one
    (a model without it takes the first series it needs); None when nobody gives any."""
    given = args.stage_inputs()
    if given is not None:
        if len(given) != len(models):
            raise ArgsError(
                f"series_folders gives {len(given)} stage input list(s) for {len(models)} model(s)",
                key="series_folders",
            )
        return given
    defaults = [catalog.resolve(m).default_args.stage_inputs() for m in models]
    if all(d is None for d in defaults):
        return None
    return [
        d[0] if d else list(range(len(catalog.resolve(m).channel_names)))
        for m, d in zip(models, defaults, strict=True)
    ]


def seg_each_stage(catalog: ModelCatalog, models: Sequence[str], args: Mapping[str, Any]) -> bool:
    """``seg_each_stage`` from the request's arguments over the last model's defaults."""
    return merge(catalog.resolve(models[-1]).default_args, args).seg_each_stage


def request_problems(
    catalog: ModelCatalog,
    models: Sequence[str],
    args: Mapping[str, Any],
    *,
    n_series: int = 1,
    stage_inputs: Sequence[Sequence[str | int]] | None = None,
) -> list[Problem]:
    """Every problem :func:`plan_request` would meet, one per argument or model at fault (empty: the
    request can run)."""
    problems: list[Problem] = []
    for name in models:
        try:
            catalog.resolve(name)
        except InferenceError as exc:
            problems.append(Problem(None, str(exc)))
    if problems:
        return problems
    bad_keys = args_problems(args)
    problems.extend(Problem(key, message) for key, message in bad_keys)
    good = {k: v for k, v in args.items() if k not in {key for key, _ in bad_keys}}
    lengths = [
        Problem(key, f"{count} per-stage values but the cascade has {len(models)} model(s)")
        for key, count in parse_args(good).stage_counts().items()
        if count != len(models)
    ]
    if lengths:  # stages cannot be told apart
        return problems + lengths
    for position, model_name in enumerate(models):  # each model's defaults, the arguments laid over
        model = catalog.resolve(model_name)
        try:
            stage = merge(model.default_args, good).for_stage(position)
            model.check_stage(stage)
        except ArgsError as exc:
            problems.append(Problem(exc.key, str(exc)))
    if problems:
        return _unique(problems)
    try:
        plan_request(catalog, models, args, n_series=n_series, stage_inputs=stage_inputs)
    except ArgsError as exc:
        problems.append(Problem(exc.key, str(exc)))
    except InferenceError as exc:
        problems.append(Problem(None, str(exc)))
    return _unique(problems)


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
