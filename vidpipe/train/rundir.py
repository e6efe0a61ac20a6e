"""A run folder and the names of everything in it, in one place.

RUN/run.json                  the run card (the resolved config, classes, inputs, data provenance)
RUN/metrics.jsonl             one line per finished epoch
RUN/summary.json              the last epoch and the one validation chose
RUN/checkpoints/last.safetensors, best.safetensors
RUN/per_class.csv, confusion.png, curves.png    reports of the best epoch
RUN/eval-SPLIT[-vote]/        `vidpipe eval` reports
RUN/run.lock                  held by the one `vidpipe train` writing the folder
Runs written before the run card keep their card in RUN/config.json; it is read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from vidpipe.errors import VidpipeError
from vidpipe.files import disk_full_reported, exclusive_lock, read_json, write_text_atomic


class RunDir:
    CARD, LEGACY_CARD = "run.json", "config.json"
    BEST, LAST = "best.safetensors", "last.safetensors"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.best, self.last = self.checkpoints / self.BEST, self.checkpoints / self.LAST
        self.metrics, self.summary = self.root / "metrics.jsonl", self.root / "summary.json"
        self.per_class, self.confusion, self.curves = self.root / "per_class.csv", self.root / "confusion.png", self.root / "curves.png"

    @property
    def card(self) -> Path:
        """run.json, or config.json in a run written before the run card."""
        legacy = self.root / self.LEGACY_CARD
        return legacy if legacy.is_file() and not (self.root / self.CARD).is_file() else self.root / self.CARD

    def eval_dir(self, split: str, fusion: str = "mean") -> Path:
        return self.root / f"eval-{split}{'-vote' if fusion == 'vote' else ''}"

    def evaluations(self) -> dict[str, Path]:
        """The run's `vidpipe eval` reports by eval_dir's name: "test", "val", "val-vote" -> metrics.json."""
        return {p.name[len("eval-"):]: p / "metrics.json" for p in sorted(self.root.glob("eval-*")) if (p / "metrics.json").is_file()}

    def chosen_checkpoint(self) -> Path:
        """The checkpoint validation chose (`best`), else `last` (a run without validation)."""
        return self.best if self.best.is_file() else self.last

    def read_card(self) -> dict | None:
        """The card's raw record, or None when the folder holds none (a run killed before writing it)."""
        return read_json(self.card, "start the run again in a new --out") if self.card.is_file() else None

    def lock(self):
        """Held while one `vidpipe train` writes the folder; a second is refused in one line."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VidpipeError(f"cannot write the run directory {self.root}: {e.strerror or e}; choose another --out") from None
        return exclusive_lock(self.root / "run.lock", f"another `vidpipe train` is writing {self.root} (it holds run.lock); "
                                                      "wait for it to finish or choose another --out")

    def check_new_or_resumable(self, resume: bool) -> dict | None:
        """Before a run starts: the card it resumes (None for a fresh start). A folder holding a finished epoch
        is refused without --resume; --resume of a folder without a card is refused; a folder killed before its
        first checkpoint holds nothing to keep and starts again."""
        if not resume:
            if self.last.is_file():
                raise VidpipeError(f"{self.root} already holds a run; pass --resume to continue it or choose a new --out")
            return None
        saved = self.read_card()
        if saved is None:
            raise VidpipeError(f"{self.root} holds no run to resume; start it without --resume")
        return saved

    def start(self, card_record: dict) -> None:
        """Create the folder's layout and write the card (atomically)."""
        try:
            with disk_full_reported(self.root / self.CARD):
                self.checkpoints.mkdir(parents=True, exist_ok=True)
                write_text_atomic(self.root / self.CARD, json.dumps(card_record, indent=2) + "\n")
        except OSError as e:
            raise VidpipeError(f"cannot write the run directory {self.root}: {e.strerror or e}; choose another --out") from None

    def rewrite_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl as the checkpoint knows it (rows of epochs after a kill between the two writes dropped)."""
        with disk_full_reported(self.metrics):
            write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in history))

    def append_metrics(self, record: dict) -> None:
        with disk_full_reported(self.metrics), open(self.metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def history(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_summary(self, summary: dict) -> None:
        with disk_full_reported(self.summary):
            write_text_atomic(self.summary, json.dumps(summary, indent=2) + "\n")

    def read_summary(self) -> dict:
        return read_json(self.summary, f"{self.root} is damaged; train it again")
