"""How every batch verb runs its subjects or cases, so a cluster run can die at any point and be
rerun: one failure is that subject's, a rerun skips what is done, nothing is half-written.

- `Batch.each` runs the verb's work item by item (or in --jobs processes): a TumorError or a
  crash of one item is its failure, not the batch's; in one process, SIGTERM (scancel, a time
  limit) ends the run at once but lets the write in hand remove its temporary (exit 143); the
  temporaries a SIGKILL left behind are removed before their item is redone.
- Per-subject log (verbs that write a folder per run: preprocess, segment): one line per outcome
  appended to OUT/logs/<subject>.log, with the host and SLURM job; a crash's traceback follows.
  Table verbs (volumes, evaluate, evaluate-image) write one table per run: their log is the batch
  summary, a line per failed case.
- Summary: done / skipped / failed with the reason (`summary()`, `show()`), and
  `raise_if_failed()`: PartialBatch, exit code 3.
- Resume for outputs made here (segment, predict-post): `finished(record, made_from)` is true
  when the record (a JSON sidecar) names these inputs and parameters and every output it lists
  is there with its sha256; `publish` writes the record first, then renames the staged outputs
  into place; `made_once` does both for a verb's one file per item (skip, refuse, or make).
  (`tumor preprocess` keeps its own record, preprocess.json, in each subject folder.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tumorcli.errors import BadInput, PartialBatch, TumorError, first_line

LOGS = "logs"
# atomic.py writes `.tmp-<12 hex>-<name>` beside the final name; preprocess stages `.new-<name>`
_STAGED = re.compile(r"^(?:\.tmp-[0-9a-f]{12}-|\.new-)+")


class Batch:
    """The outcomes of one run of `verb` over its items. logs: the folder of per-subject logs
    (None: no log files); what: the items' plural in messages ("subjects", "masks", "cases")."""

    def __init__(self, verb: str, logs: Path | None = None, what: str = "subjects") -> None:
        self.verb, self.logs, self.what = verb, logs, what
        self.outcomes: list[tuple[str, str, TumorError | None]] = []  # (name, status, error)

    def fail_unmatched(self, matched, case_of: Callable[[Path], str], pred: Path,
                       ref: Path) -> None:
        """Each prediction without a reference in `ref`, and each reference without a
        prediction in `pred` (a metrics.cases match), fails as its case."""
        for path in matched.prediction_only:
            self.fail(case_of(path), BadInput(f"{path}: case has no reference in {ref}",
                                              "check the case ids"))
        for path in matched.reference_only:
            self.fail(case_of(path), BadInput(f"{path}: case has no prediction in {pred}",
                                              "check the case ids"))

    def rows(self, items: list, work: Callable[[Any], dict], **options) -> list[dict]:
        """each() as table rows: work(item)'s row, or {"subject", "status": "failed", "error"}
        for an item that failed (options as for each())."""
        name = options.get("name", lambda item: item.name)
        return [row if error is None else {"subject": name(item), "status": "failed",
                                           "error": error.message}
                for item, row, error in self.each(items, work, **options)]

    def each(self, items: list, work: Callable[[Any], Any], *,
             name: Callable[[Any], str] = lambda item: item.name, jobs: int = 1,
             outputs: Callable[[Any], Iterable[Path]] | None = None,
             advance: Callable[..., None] = lambda steps=1: None
             ) -> Iterator[tuple[Any, Any, TumorError | None]]:
        """Yield (item, work(item), None) or (item, None, error) for each item, in order.

        A result that is a dict with "status": "skipped" counts as skipped, else as done.
        jobs > 1: that many processes (work must be picklable). outputs(item): the final paths
        whose leftover temporaries are removed first (only this item's task writes them).
        """
        for item in items if outputs else ():
            for path in outputs(item):
                remove_leftovers(path)
        if jobs > 1 and len(items) > 1:
            from tumorcli.metrics.batch import run_each

            results = run_each(partial(_crash_is_an_error, work), items, jobs)
            for item, (result, error) in zip(items, results):
                yield item, result, self._note(name(item), result, error)
                advance()
            return
        with _sigterm_ends_the_run():
            for item in items:
                began = time.perf_counter()
                try:
                    result, error, trace = work(item), None, ""
                except TumorError as failure:
                    result, error, trace = None, failure, ""
                except Exception as crash:  # noqa: BLE001 - one item's crash must not end the batch
                    result, error = None, _as_error(name(item), crash, self._log_path(name(item)))
                    trace = traceback.format_exc()
                except BaseException as stop:  # SIGTERM, Ctrl-C: say where it stopped, then stop
                    cause = "SIGTERM" if isinstance(stop, Terminated) else type(stop).__name__
                    self.log(name(item), f"interrupted by {cause}; rerun to finish")
                    raise
                yield item, result, self._note(name(item), result, error,
                                               time.perf_counter() - began, trace)
                advance()

    def fail(self, name: str, error: TumorError) -> None:
        """Count an item that failed before any work (e.g. a case found on one side only)."""
        self._note(name, None, error)

    def _note(self, name: str, result: Any, error: TumorError | None, seconds: float | None = None,
              trace: str = "") -> TumorError | None:
        skipped = isinstance(result, dict) and result.get("status") == "skipped"
        status = "failed" if error is not None else "skipped" if skipped else "done"
        self.outcomes.append((name, status, error))
        if error is not None:
            self.log(name, f"failed: {error}" + "".join(f"\n    {line}" for line in
                                                        trace.rstrip().splitlines()))
        elif skipped:
            self.log(name, "skipped: its outputs exist and match these inputs and options")
        else:
            seconds = seconds if seconds is not None else (
                result.get("seconds") if isinstance(result, dict) else None)
            self.log(name, "done" + (f" in {seconds:.1f} s" if seconds is not None else ""))
        return error

    def _log_path(self, name: str) -> Path | None:
        return None if self.logs is None else self.logs / f"{name}.log"

    def log(self, name: str, message: str) -> None:
        """Append one line to OUT/logs/<name>.log (one write, so array tasks never interleave)."""
        path = self._log_path(name)
        if path is None:
            return
        stamp = datetime.now().isoformat(timespec="seconds")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as handle:
                handle.write(f"{stamp} {self.verb} [{_where()}] {message}\n")
        except OSError:
            pass  # a log that cannot be written must not fail the subject

    @property
    def errors(self) -> list[TumorError]:
        return [error for _, _, error in self.outcomes if error is not None]

    def summary(self) -> dict:
        """{"done", "skipped", "failed": counts, "failures": [{"name", "error"}], "logs"}."""
        count = lambda status: sum(s == status for _, s, _ in self.outcomes)
        return {"done": count("done"), "skipped": count("skipped"), "failed": count("failed"),
                "failures": [{"name": name, "error": str(error)}
                             for name, _, error in self.outcomes if error is not None],
                "logs": str(self.logs) if self.logs is not None else None}

    def show(self) -> None:
        """One line of counts (for more than one item), then one line per failure."""
        from rich.markup import escape

        from tumorcli.cli.common import console

        summary = self.summary()
        if len(self.outcomes) < 2 and not summary["failed"]:
            return
        counts = [f"{summary['done']} done"] + [f"{summary[status]} {status}" for status in
                                                 ("skipped", "failed") if summary[status]]
        where = f" (logs in {summary['logs']})" if summary["logs"] and summary["failed"] else ""
        out = console()
        out.print(escape(f"{self.verb}: {', '.join(counts)} of {len(self.outcomes)} "
                         f"{self.what}{where}"))
        for failure in summary["failures"]:
            error = failure["error"]
            named = error if error.startswith(failure["name"]) else f"{failure['name']}: {error}"
            out.print(f"  [red]failed[/] {escape(named)}")

    def raise_if_failed(self, failed: str = "failed", written: str = "") -> None:
        """PartialBatch (exit 3) when some items failed: "N of M <what> <failed>, first: ..."."""
        errors = self.errors
        if not errors:
            return
        hint = errors[0].hint or "rerun to retry them: finished ones are skipped"
        if self.logs is not None:
            hint += f"; per-subject logs in {self.logs}"
        raise PartialBatch(f"{len(errors)} of {len(self.outcomes)} {self.what} {failed}, first: "
                           f"{errors[0].message}{written}", hint)


def _crash_is_an_error(work: Callable[[Any], Any], item: Any) -> Any:
    # in a worker process: a crash comes back as that item's TumorError (run_each sends those)
    try:
        return work(item)
    except TumorError:
        raise
    except Exception as crash:  # noqa: BLE001
        raise _as_error(getattr(item, "name", str(item)), crash, None) from None


def _as_error(name: str, crash: Exception, log: Path | None) -> TumorError:
    where = f"the traceback is in {log}" if log is not None else "rerun it alone with --debug"
    return TumorError(f"{name}: failed ({type(crash).__name__}: {first_line(crash)})", where)


def _where() -> str:
    """This host and SLURM job (array job_task), or the process id outside SLURM."""
    host = socket.gethostname().split(".")[0]
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{host} job {array}_{task}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"{host} job {os.environ['SLURM_JOB_ID']}"
    return f"{host} pid {os.getpid()}"


class Terminated(SystemExit):
    """SIGTERM arrived (scancel, a time limit): exit code 143, as the default action gives."""


@contextmanager
def _sigterm_ends_the_run() -> Iterator[None]:
    """SIGTERM becomes Terminated(143) in this process: the `finally` of atomic writes runs and
    removes their temporaries (the default action would leave them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number, frame):
        raise Terminated(128 + number)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def remove_leftovers(final: Path) -> list[Path]:
    """Remove the temporaries of `final` (files or folders named `.tmp-<hex>-<name>` or
    `.new-<name>` beside it) that a killed run left; returns what was removed."""
    removed = []
    folder = final.parent
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        prefix = _STAGED.match(entry.name)
        if prefix and entry.name[prefix.end():] == final.name:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def staged_name(final: Path) -> Path:
    """Where to write `final` before `publish` renames it (a name `remove_leftovers` knows)."""
    return final.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{final.name}")


def record_path(final: Path) -> Path:
    """The JSON sidecar of an output: …/S1-seg.nii.gz → …/S1-seg.json (as BIDS does)."""
    name = final.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return final.with_name(name[: -len(suffix)] + ".json")
    return final.with_name(name + ".json")


def finished(record: Path, made_from: dict) -> bool:
    """True when `record` says its outputs were made from `made_from` (inputs' sha256 and the
    parameters) and every output it lists exists with the sha256 it recorded."""
    from tumorcli.preprocess.inputs import sha256_of

    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if saved.get("made_from") != json.loads(json.dumps(made_from)) or not saved.get("outputs"):
        return False
    for name, digest in saved["outputs"].items():
        path = record.parent / name
        if not path.is_file() or sha256_of(path) != digest:
            return False
    return True


def publish(staged: dict[Path, Path], record: Path, made_from: dict, verb: str,
            **details: Any) -> None:
    """Put staged outputs ({final: staged path}) in place with their record: the record first,
    so a kill in between leaves outputs that `finished` rejects, never ones it trusts wrongly."""
    from tumorcli import __version__
    from tumorcli.io.atomic import atomic_file
    from tumorcli.preprocess.inputs import sha256_of

    for final in staged:
        if final.parent != record.parent:
            raise BadInput(f"{final}: an output outside its record's folder {record.parent}",
                           "keep a subject's outputs beside their record")
    content = {"made_by": f"tumor {verb}", "version": __version__,
               "finished": datetime.now().isoformat(timespec="seconds"), "where": _where(),
               "outputs": {final.name: sha256_of(path) for final, path in staged.items()},
               "made_from": made_from, **details}
    with atomic_file(record) as temporary:
        temporary.write_text(json.dumps(content, indent=1, default=str) + "\n")
    for final, path in staged.items():
        os.replace(path, final)


def made_once(final: Path, made_from: dict, verb: str, make: Callable[[Path], dict],
              overwrite: bool = False) -> dict:
    """One item's output `final`, made at most once: {"status": "skipped"} when its record says
    it was made from `made_from`; BadInput when it exists from other inputs or options (unless
    overwrite); else `make(staged)` writes it at a staged name and returns what the record adds
    (e.g. {"seconds": 7.1}), `publish` puts both in place: {"status": "done", **that}."""
    record = record_path(final)
    if not overwrite and finished(record, made_from):
        return {"status": "skipped"}
    if final.exists() and not overwrite:
        raise BadInput(f"{final}: exists and was made from other inputs or options",
                       "remove it, or pass --overwrite to replace it")
    staged = staged_name(final)
    try:
        details = make(staged)
        publish({final: staged}, record, made_from, verb, **details)
    finally:
        staged.unlink(missing_ok=True)
    return {"status": "done", **details}


def model_digest(folder: Path) -> dict:
    """A model's name and the sha256 of its config.json and weights (what makes its labels)."""
    import hashlib

    from tumorcli.preprocess.inputs import sha256_of

    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    digest = hashlib.sha256("".join(sha256_of(f) for f in files if f.is_file()).encode())
    return {"name": folder.name, "sha256": digest.hexdigest()}
