"""Dataset cards (vidpipe/manifests/<name>.toml): layout, class count, expected counts, extraction defaults."""

from __future__ import annotations

import sys
from pathlib import Path

from vidpipe.errors import VidpipeError
from vidpipe.datasets.manifest import Manifest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CARDS_DIR = Path(__file__).resolve().parents[1] / "manifests"  # vidpipe/manifests, package data of the wheel too
APPROX_TOLERANCE = 0.1  # approximate card counts (Kinetics) warn only beyond 10 %


def load_card(name: str) -> dict:
    path = CARDS_DIR / f"{name}.toml"
    if not path.is_file():
        raise VidpipeError(f"no dataset card {name}.toml in {CARDS_DIR}; every adapter needs one in vidpipe/manifests/")
    return tomllib.loads(path.read_text())


def _expected_total(spec: dict, split_id: int | None) -> int | None:
    total = spec.get("total")
    if isinstance(total, dict):  # per official split number, e.g. UCF101
        return total.get(str(split_id or 1))
    return total


def check_against_card(manifest: Manifest, card: dict) -> list[str]:
    """Human-readable warnings wherever the manifest's counts differ from what the card expects."""
    warnings = []
    if "classes" in card and len(manifest.classes) != card["classes"]:
        warnings.append(f"{len(manifest.classes)} classes, card expects {card['classes']}")
    counts = manifest.counts()
    for split, spec in card.get("expected", {}).items():
        per_class = counts.get(split, {})
        got = sum(per_class.values())
        want = _expected_total(spec, manifest.split_id)
        if want is not None:
            tol = APPROX_TOLERANCE * want if spec.get("approximate") else 0
            if abs(got - want) > tol:
                approx = "about " if spec.get("approximate") else ""
                warnings.append(f"{split}: {got} videos, card expects {approx}{want}")
        if "per_class" in spec:
            off = {c: n for c, n in per_class.items() if n != spec["per_class"]}
            if off:
                shown = ", ".join(f"{c}={n}" for c, n in list(off.items())[:5])
                more = f" (+{len(off) - 5} more)" if len(off) > 5 else ""
                warnings.append(f"{split}: {len(off)} classes differ from {spec['per_class']} per class: {shown}{more}")
    if manifest.missing:
        warnings.append(f"{len(manifest.missing)} videos listed by the annotations are missing on disk")
    return warnings
