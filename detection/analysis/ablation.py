"""Ablation sets: several detector configs trained with one schedule, evaluated, and tabulated.

A set file is YAML:

    name: shortcuts            # optional; default: the file's stem
    description: ...           # optional, one line for the table's heading
    members:                   # configs, relative to the set file, in table order
      - R34_A.yaml
      - R34_B.yaml
      - {config: R34_B.yaml, name: R34_B_lr01, overrides: [solver.base_lr=0.01]}
    baseline: R34_A            # optional; a member name (default: the first member)
    overrides: [KEY=VALUE]     # optional; applied to every member
    output_dir: output/x/y     # optional; default output/ablations/<name>

A member's name is its `name`, or its config file's stem; it must be unique. Its run lives in
<output_dir>/<member> (its config's output_dir is replaced). Overrides apply in the order: set
`overrides`, the member's `overrides`, then the command line's.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backbones import get_backbone

from ..config import Config, ConfigError, config_from_dict, load_config, to_dict
from ..evaluation.compare import METRIC_FIELDS, Entry, comparison_rows, load_entry
from ..utils.io import write_text
from ..utils.metrics import read_metrics
from ..utils.tables import csv_table, markdown_table

SET_KEYS = ("name", "description", "members", "baseline", "overrides", "output_dir")
MEMBER_KEYS = ("config", "name", "overrides")
TABLE_FIELDS = (
    "member",
    *METRIC_FIELDS,
    "params",
    "final_loss",
    "iterations",
    "baseline",
    "status",
    "output_dir",
)


@dataclass
class Member:
    """One config of a set."""

    name: str
    config: Path
    overrides: list[str] = field(default_factory=list)


@dataclass
class AblationSet:
    """A parsed set file (see the module docstring)."""

    path: Path
    name: str
    members: list[Member]
    baseline: str
    overrides: list[str] = field(default_factory=list)
    output_dir: Path = Path("output/ablations")
    description: str = ""

    def member_config(self, member: Member, overrides: Sequence[str] = ()) -> Config:
        """The member's resolved config, its output_dir inside the set's."""
        for text in overrides:
            if text.split("=", 1)[0].strip() == "output_dir":
                raise ConfigError(
                    f"override {text!r}: an ablation places each member in <output_dir>/<member>;"
                    " use --output-dir (or the set file's output_dir) instead"
                )
        cfg = load_config(member.config, [*self.overrides, *member.overrides, *overrides])
        cfg.output_dir = str(self.output_dir / member.name)
        return cfg


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of KEY=VALUE strings, got {value!r}")
    return list(value)


def load_ablation_set(
    path: str | os.PathLike, output_dir: str | os.PathLike | None = None
) -> AblationSet:
    """Read and check a set file: keys, member files, unique names, the baseline."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ablation set not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an ablation set is a mapping with a 'members' list")
    unknown = sorted(set(data) - set(SET_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; a set file has {', '.join(SET_KEYS)}")
    raw = data.get("members")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: 'members' must be a non-empty list of config paths")
    members = []
    for i, item in enumerate(raw):
        where = f"{path}: members[{i}]"
        if isinstance(item, str):
            item = {"config": item}
        if not isinstance(item, dict) or not isinstance(item.get("config"), str):
            raise ConfigError(f"{where} must be a config path or a mapping with 'config'")
        bad = sorted(set(item) - set(MEMBER_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; a member has {MEMBER_KEYS}")
        config = path.parent / item["config"]
        if not config.is_file():
            raise FileNotFoundError(
                f"{where}: config {item['config']!r} not found (looked at {config}; member paths "
                "are relative to the set file)"
            )
        name = str(item.get("name") or config.stem)
        if any(m.name == name for m in members):
            raise ConfigError(f"{where}: member name {name!r} is used twice; give one a 'name'")
        members.append(Member(name, config, _string_list(item.get("overrides"), where)))
    names = [m.name for m in members]
    baseline = data.get("baseline") or names[0]
    baseline = Path(str(baseline)).stem if str(baseline).endswith((".yaml", ".yml")) else baseline
    if baseline not in names:
        raise ConfigError(f"{path}: baseline {baseline!r} is not a member; members: {names}")
    name = str(data.get("name") or path.stem)
    out = output_dir or data.get("output_dir") or Path("output/ablations") / name
    return AblationSet(
        path=path,
        name=name,
        members=members,
        baseline=str(baseline),
        overrides=_string_list(data.get("overrides"), f"{path}: overrides"),
        output_dir=Path(out),
        description=str(data.get("description") or ""),
    )


def schedule_differences(configs: dict[str, Config]) -> list[str]:
    """Lines naming the solver keys in which members differ from the first one."""
    from ..utils.checkpoint import config_differences

    items = list(configs.items())
    first_name, first = items[0]
    lines = []
    for name, cfg in items[1:]:
        for diff in config_differences(to_dict(first), to_dict(cfg), "solver"):
            lines.append(f"{first_name} vs {name}: {diff}")
    return lines


@dataclass
class MemberResult:
    """A member's outcome: its evaluation, size and last training loss, or why it failed."""

    member: str
    model: str
    output_dir: Path
    ap50: float | None = None
    ap: float | None = None
    params: int | None = None
    final_loss: float | None = None
    iterations: int | None = None
    status: str = "ok"
    metrics_file: Path | None = None


def model_label(cfg: Config) -> str:
    """The paper's naming: plain-34, ResNet-34 A/B/C (Table 3), VGG-16; FPN appended."""
    from ..evaluation.compare import display_name

    b = cfg.model.backbone
    label = display_name(to_dict(cfg), b.name)
    spec = get_backbone(b.name)
    if "shortcut" in spec.options and b.shortcut != "none":  # the ResNets of Table 3
        label = label.replace(spec.label, f"{spec.label} {b.shortcut}", 1)
    return label


def count_parameters(cfg: Config) -> int:
    """All parameters of the detector `cfg` builds (frozen ones included)."""
    from ..modeling import build_model

    model = build_model(cfg, load_weights=False)
    return sum(p.numel() for p in model.parameters())


def _last_loss(output_dir: Path) -> tuple[float | None, int | None]:
    """(total loss, iteration) of the last training record of metrics.jsonl."""
    train = [r for r in read_metrics(output_dir, missing_ok=True) if "total_loss" in r]
    return (train[-1]["total_loss"], train[-1].get("iteration")) if train else (None, None)


def collect_result(member: Member, cfg: Config) -> MemberResult:
    """A finished member's numbers, read from its output folder (eval/metrics.json and
    metrics.jsonl), so the table is the same whether the runs happened now or earlier."""
    out = Path(cfg.output_dir)
    result = MemberResult(member.name, model_label(cfg), out)
    entry = load_entry(out)
    result.ap50, result.ap = entry.ap50, entry.ap
    result.metrics_file = Path(entry.source)
    record = json.loads(result.metrics_file.read_text())
    evaluated = config_from_dict(record["config"], str(result.metrics_file))
    result.params = count_parameters(evaluated)
    result.final_loss, result.iterations = _last_loss(out)
    return result


def is_done(cfg: Config) -> bool:
    """Whether cfg.output_dir holds a final evaluation of exactly this config."""
    path = Path(cfg.output_dir) / "eval" / "metrics.json"
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    # through JSON, as the stored record went, so tuples and lists compare equal
    given = json.loads(json.dumps(to_dict(cfg)))
    return record.get("config") == as_trained(given, record.get("config"))


def as_trained(given: dict[str, Any], trained: Any) -> dict[str, Any]:
    """The config dict `given` with what training settles from the data taken from the
    `trained` record: the number of classes where `given` leaves it null, max_iter, steps and
    warmup_iters where it sets max_epochs."""
    if not isinstance(trained, dict):
        return given
    out = copy.deepcopy(given)
    heads = out["model"]["roi_heads"]
    if heads.get("num_classes") is None:
        heads["num_classes"] = trained.get("model", {}).get("roi_heads", {}).get("num_classes")
    if out["solver"].get("max_epochs") is not None:
        for key in ("max_iter", "steps", "warmup_iters"):
            out["solver"][key] = trained.get("solver", {}).get(key)
    return out


def train_and_evaluate(cfg: Config, *, device: str = "cpu", resume: bool = False) -> None:
    """Train cfg and evaluate the final model into <output_dir>/eval (as tools/train.py does)."""
    from ..engine.trainer import train
    from ..evaluation import training_evaluator

    if cfg.test.eval_period < 0:
        raise ConfigError(
            "test.eval_period=-1 turns evaluation off, but an ablation compares evaluated "
            "models; use 0 (evaluate at the end) or a positive period"
        )

    train(cfg, resume=resume, device=device, evaluate=training_evaluator(cfg))


def run_ablation(
    ablation: AblationSet,
    overrides: Sequence[str] = (),
    *,
    device: str = "cpu",
    resume: bool = False,
    reuse: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[MemberResult]:
    """Train and evaluate every member in turn; a member that fails (e.g. a diverging plain
    net) is reported in its row and the others still run. With `reuse`, members whose folder
    already holds the final evaluation of the same config are not retrained."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    configs = {m.name: ablation.member_config(m, overrides) for m in ablation.members}
    diffs = schedule_differences(configs)
    if diffs:
        warnings.warn(
            f"{ablation.path}: the members do not share one schedule:\n  " + "\n  ".join(diffs),
            stacklevel=2,
        )
    results = []
    for i, member in enumerate(ablation.members, 1):
        cfg = configs[member.name]
        log(f"[{i}/{len(ablation.members)}] {member.name} ({model_label(cfg)}) -> {cfg.output_dir}")
        try:
            if reuse and is_done(cfg):
                log(f"{member.name}: reusing the evaluation in {cfg.output_dir}/eval")
            else:
                train_and_evaluate(cfg, device=device, resume=resume)
            results.append(collect_result(member, cfg))
        except FloatingPointError as e:
            log(f"{member.name}: training stopped: {e}")
            results.append(
                MemberResult(
                    member.name, model_label(cfg), Path(cfg.output_dir), status=f"failed: {e}"
                )
            )
    return results


def ablation_rows(results: Sequence[MemberResult], baseline: str) -> list[dict[str, Any]]:
    """Table rows in member order: compare.py's rows (changes against the baseline member)
    plus member, parameters, final loss, iterations, status and output folder."""
    base = next(r for r in results if r.member == baseline)
    others = [r for r in results if r.member != baseline]
    # comparison_rows gives the baseline's row first, then the others in the given order
    ordered = [base, *others]
    entries = [Entry(r.model, r.ap50, r.ap, str(r.metrics_file or r.output_dir)) for r in ordered]
    rows = comparison_rows(entries[0], entries[1:])
    by_member = {}
    for row, r in zip(rows, ordered, strict=True):
        by_member[r.member] = {
            **row,
            "member": r.member,
            "params": r.params,
            "final_loss": r.final_loss,
            "iterations": r.iterations,
            "status": r.status,
            "output_dir": str(r.output_dir),
        }
    return [by_member[r.member] for r in results]


def _num(value: float | None, fmt: str = ".1f", signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, ("+" if signed else "") + fmt)


def format_ablation_markdown(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The table as Markdown: mAP@.5, mAP@[.5,.95], their changes, parameters, final loss."""
    header = [
        "member",
        "model",
        "mAP@.5",
        "mAP@[.5,.95]",
        "Δ mAP@.5",
        "Δ mAP@[.5,.95]",
        "params (M)",
        "final loss",
    ]
    cells = []
    for row in rows:
        if row["baseline"]:
            changes = ["baseline", "baseline"]
        else:
            changes = [_num(row["delta_map50"], signed=True), _num(row["delta_map"], signed=True)]
        params = None if row["params"] is None else row["params"] / 1e6
        loss = _num(row["final_loss"], ".3f") if row["status"] == "ok" else row["status"]
        cells.append(
            [row["member"], row["model"], _num(row["map50"]), _num(row["map"]), *changes]
            + [_num(params, ".2f"), loss]
        )
    lines = [f"**{title}**", ""] if title else []
    lines += [markdown_table(header, cells), ""]
    lines.append(
        "Δ: points against the baseline member. final loss: mean total training loss over the "
        "last solver.log_period iterations. params: all detector parameters."
    )
    return "\n".join(lines)


def format_ablation_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The table as CSV (floats rounded to 4 decimals, empty where not available)."""
    return csv_table(rows, TABLE_FIELDS)


def write_tables(rows: Sequence[dict[str, Any]], output_dir: Path, title: str) -> list[Path]:
    """<output_dir>/ablation.md and ablation.csv; returns their paths."""
    md = write_text(output_dir / "ablation.md", format_ablation_markdown(rows, title) + "\n")
    return [md, write_text(output_dir / "ablation.csv", format_ablation_csv(rows))]
