"""`vidpipe compare`: runs side by side, one row per run, from what each run directory records.

A row holds the model and the options that differ between the runs; parameters (split into backbone and
head where the model names its backbone); the val top-1 of the checkpoint val chose; the `split` metrics of
`vidpipe eval` (top-1, top-5, mean-class accuracy, macro-F1) with the checkpoint and split they come from;
seconds per training epoch, clips/s and peak memory. Runs trained on different data (their provenance
differs) are refused unless `force`, and then marked.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidpipe.errors import VidpipeError
from vidpipe.files import read_json
from vidpipe.models import model_entry
from vidpipe.train.card import load_run
from vidpipe.train.rundir import RunDir

COLUMNS = {  # key -> (heading, format); "val_top1" and the split's metrics are fractions in [0, 1]
    "params_m": ("params (M)", "{:.2f}"),
    "backbone_m": ("backbone (M)", "{:.2f}"),
    "head_m": ("head (M)", "{:.2f}"),
    "val_top1": ("val top-1", "{:.3f}"),
    "top1": ("top-1", "{:.3f}"),
    "published": ("published top-1 (%)", "{:.2f}"),  # runs made from a recipe: the source's figure, in its own protocol
    "top5": ("top-5", "{:.3f}"),
    "mean_class_acc": ("mean-class", "{:.3f}"),
    "macro_f1": ("macro-F1", "{:.3f}"),
    "epoch_s": ("s/epoch", "{:.1f}"),
    "clips_per_s": ("clips/s", "{:.1f}"),
    "peak_mb": ("peak MB", "{:.0f}"),
}
SORTABLE = tuple(COLUMNS)
SPLIT_METRICS = ("top1", "top5", "mean_class_acc", "macro_f1")  # from `vidpipe eval` on the compared split


def _heading(key: str, split: str) -> str:
    return f"{split} {COLUMNS[key][0]}" if key in SPLIT_METRICS else COLUMNS[key][0]


def _label(row: dict) -> str:
    return row["run"] + (" *" if row["other_data"] else "")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _param_split(model: torch.nn.Module, params: int) -> tuple[float | None, float | None]:
    """(backbone, head) parameters in millions where the model names its backbone (`backbone_prefixes`)."""
    prefixes = getattr(model, "backbone_prefixes", None)
    if not prefixes:
        return None, None
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))
    return backbone / 1e6, (params - backbone) / 1e6


def read_run(run: Path, split: str) -> dict:
    rundir = RunDir(run)
    if not rundir.card.is_file() or not rundir.summary.is_file() or not rundir.chosen_checkpoint().is_file():
        raise VidpipeError(f"{run} is not a finished run (no run card, summary.json or checkpoint); pass directories made by `vidpipe train`")
    rundir.read_card()  # a damaged card is one line, whatever the checkpoint says
    loaded = load_run(run, device="meta", weights=False)  # shapes and counts only: no memory, no weights
    card, summ, history = loaded.card, rundir.read_summary(), rundir.history()
    backbone, head = _param_split(loaded.model, card.params)
    row = {"run": run.name, "path": str(run), "model": card.model, "options": _flat({k: card.config[k] for k in ("model_options", "data", "optim")}),
           "provenance": card.provenance, "params_m": card.params / 1e6, "backbone_m": backbone, "head_m": head,
           "val_top1": summ["best"]["top1"] if summ.get("best") else None,
           "val_from": f"epoch {summ['best']['epoch']} (best on {summ['selection']['split']})" if summ.get("best") else "no val split",
           "epoch_s": sum(r["epoch_seconds"] for r in history) / len(history) if history else None,
           "clips_per_s": sum(r["clips_per_s"] for r in history) / len(history) if history else None,
           "peak_mb": max((r["peak_memory_mb"] for r in history), default=None)}
    recipe = card.config.get("recipe") or {}
    if recipe:
        published = recipe.get("published", {})
        row.update(recipe=recipe["name"], published=published.get("top1"),
                   published_as=f"{recipe['name']}: {published.get('metric')}, {published.get('protocol')} ({recipe.get('source')})")
    evaluated = rundir.evaluations()
    name = split if split in evaluated else f"{split}-vote" if f"{split}-vote" in evaluated else None  # mean fusion first
    if name is not None:
        r = read_json(evaluated[name], f"run `vidpipe eval {run} --split {split}` again")
        row.update({k: r["metrics"][k] for k in SPLIT_METRICS})
        fusion = ", vote fusion" if name.endswith("-vote") else ""
        row["from"] = f"{Path(r['checkpoint']).name}, {r['chosen_by']}; {r['split']} ({r['metrics']['videos']} videos{fusion})"
    else:
        splits = _store_splits(card.config)
        if splits is not None and split not in splits:
            row["from"] = f"its store has no {split} split (it has {', '.join(splits)}): pass --split {_eval_split(splits)}"
        else:
            row["from"] = f"not evaluated on {split}: run `vidpipe eval {run} --split {split}`"
    return row


def _store_splits(config: dict) -> list[str] | None:
    """The splits of the store a run trained on, where it can still be read."""
    try:
        return list(json.loads((Path(config["data"]["path"]) / "store.json").read_text())["splits"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _eval_split(splits: list[str]) -> str:
    return "test" if "test" in splits else "val" if "val" in splits else splits[-1]


def default_split(runs: list[Path]) -> tuple[str, str | None]:
    """The split to compare when none is asked for: test where any run was evaluated on it, else the split
    most of the runs were evaluated on (with a sentence saying so), else test."""
    seen = [name.removesuffix("-vote") for run in runs for name in RunDir(run).evaluations()]
    if "test" in seen or not seen:
        return "test", None
    split = max(sorted(set(seen)), key=seen.count)
    return split, f"no run was evaluated on test; showing {split}, the split they were evaluated on (--split to choose)"


def compare_runs(runs: list[str | Path], split: str | None = None, sort: str = "top1", force: bool = False) -> dict:
    """Rows for `runs` (directories of `vidpipe train`), the options that differ between them, sorted by
    `sort` (descending; runs without the figure last). Runs on different data are refused unless `force`.
    `split` None: test, or where no run was evaluated on test, the split they were (`note` says so).
    A split's figures are its mean-fusion evaluation, else its vote-fusion one (`from` says which)."""
    if sort not in SORTABLE:
        raise VidpipeError(f"--sort must be one of {', '.join(SORTABLE)}; got {sort}")
    if not runs:
        raise VidpipeError("pass at least one run directory")
    note = None
    if split is None:
        split, note = default_split([Path(r) for r in runs])
    rows = [read_run(Path(r), split) for r in runs]
    reference = rows[0]["provenance"]
    for row in rows:
        row["other_data"] = row["provenance"] != reference
    odd = [r["run"] for r in rows if r["other_data"]]
    if odd and not force:
        raise VidpipeError(f"{', '.join(odd)} trained on other data than {rows[0]['run']} (their provenance differs); "
                           "compare runs on the same store, or pass --force to show them marked")
    keys = sorted({k for r in rows for k in r["options"]})
    # an option differs when the runs that have it disagree (a model without it shows "-"; the model column says why)
    differing = [k for k in keys if k != "data.path" and len({json.dumps(r["options"][k], sort_keys=True) for r in rows if k in r["options"]}) > 1]
    for row in rows:
        row["differs"] = {k: row["options"].get(k, "-") for k in differing}
    rows.sort(key=lambda r: (r.get(sort) is None, -(r.get(sort) or 0.0)))
    return {"split": split, "note": note, "sort": sort, "differing": differing, "rows": rows, "marked": odd,
            "models": {r["model"]: model_entry(r["model"]).description for r in rows}}


def table_rows(result: dict, sources: bool = True) -> tuple[list[str], list[list[str]]]:
    """Headings and cells of the comparison (the terminal table and the Markdown share them); `sources`
    adds where each figure comes from (the checkpoint val chose, the evaluated split)."""
    split = result["split"]
    columns = [k for k in COLUMNS if k != "published" or any("recipe" in r for r in result["rows"])]  # published: recipe runs only
    heads = ["run", "model", *result["differing"], *[_heading(k, split) for k in columns]]
    heads += ["val from", f"{split} from"] if sources else []
    cells = []
    for r in result["rows"]:
        values = [COLUMNS[k][1].format(r[k]) if r.get(k) is not None else "-" for k in columns]
        cells.append([_label(r), r["model"], *[_short(r["differs"][k]) for k in result["differing"]], *values]
                     + ([r["val_from"], r["from"]] if sources else []))
    return heads, cells


def _short(value) -> str:
    """A cell: "default" for an option left to the model's default (None)."""
    return "default" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def to_markdown(result: dict) -> str:
    heads, cells = table_rows(result)
    lines = ["| " + " | ".join(heads) + " |", "| " + " | ".join("---" for _ in heads) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    if result["marked"]:
        lines.append(f"\n\\* trained on other data than {result['rows'][0]['run']} (compared with --force)")
    lines += [f"\npublished ({r['run']}): {r['published_as']}" for r in result["rows"] if "published_as" in r]
    return "\n".join(lines) + "\n"


def plot_bars(result: dict, path: Path) -> bool:
    """A horizontal bar per run of the sort column; nothing written (False) when no run has the figure."""
    from vidpipe.train.metrics import _plt

    key = result["sort"]
    rows = [r for r in result["rows"] if r.get(key) is not None]
    if not rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    ax.barh([_label(r) for r in rows][::-1], [r[key] for r in rows][::-1], color="#4878a8")
    ax.set_xlabel(_heading(key, result["split"]))
    for y, r in enumerate(rows[::-1]):
        ax.text(r[key], y, " " + COLUMNS[key][1].format(r[key]), va="center", fontsize=8)
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp")  # whole or not at all
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True
