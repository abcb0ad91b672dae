"""The `tumor` application: global options, verb registration and the one error path.

Every TumorError ends as one red line on stderr and its exit code; any other exception ends as
one line naming the log file that holds the traceback. `--debug` or TUMOR_DEBUG=1 shows it.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from tumorcli import __version__
from tumorcli.cli import (convert, evaluate, evaluate_image, info, predict_growth, predict_post,
                          preprocess, report, segment, synth_cohort, train, volumes)

EXIT_CODES = ("Exit codes: 0 ok (also a training stopped by SIGTERM/SIGUSR1 after its "
              "checkpoint), 1 failure, 2 bad input, 3 partial batch (some subjects failed).")


def _debug() -> bool:
    return os.environ.get("TUMOR_DEBUG", "") not in ("", "0", "false", "no")


def _red_line(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        text, style="bold red", markup=False)


def _log_dir() -> Path:
    configured = os.environ.get("TUMOR_LOG_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tumorcli" / "logs"


def _write_crash_log(error: BaseException) -> Path | None:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    text = (f"tumor {__version__}\nargv: {sys.argv}\n\n"
            + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    for folder in (_log_dir(), Path("/tmp")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"tumor-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def _click_flow_exceptions() -> tuple[type[BaseException], ...]:
    # Typer may vendor its own click: find its exception module through a public class.
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    module = sys.modules[click_exception.__module__]
    exits = tuple(getattr(module, name) for name in ("Exit", "Abort") if hasattr(module, name))
    return (click_exception, *exits, typer.Exit, typer.Abort, KeyboardInterrupt)


_CLICK_FLOW = _click_flow_exceptions()


class TumorGroup(TyperGroup):
    """Runs a verb and turns its failures into one line and an exit code."""

    def invoke(self, ctx):
        from tumorcli.errors import TumorError

        try:
            return super().invoke(ctx)
        except TumorError as error:
            if _debug():
                traceback.print_exc()
            message = f"error: {error.message}"
            if error.hint:
                message += f". Hint: {error.hint}"
            _red_line(message)
            raise typer.Exit(error.exit_code) from None
        except _CLICK_FLOW:
            raise  # usage errors and exits: click prints them the usual way (exit code 2)
        except Exception as error:  # noqa: BLE001 - the last line of defence
            if _debug():
                traceback.print_exc()
            log = _write_crash_log(error)
            where = f"traceback in {log}" if log else "rerun with --debug for the traceback"
            _red_line(f"error: unexpected {type(error).__name__}: {error} ({where}; "
                      "please report it)")
            raise typer.Exit(1) from None

    def list_commands(self, ctx):
        return list(self.commands)  # the order verbs are registered in, not alphabetical


app = typer.Typer(
    name="tumor",
    cls=TumorGroup,
    help="Brain-tumour MRI workflows on NIfTI and DICOM. " + EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"tumor {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_show_version, is_eager=True, help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show full tracebacks (same as TUMOR_DEBUG=1).")] = False,
) -> None:
    """Brain-tumour MRI workflows on NIfTI and DICOM."""
    if debug:
        os.environ["TUMOR_DEBUG"] = "1"


# Verbs, in the order a user meets them. Register only verbs that work end to end.
app.command("convert")(convert.convert)
app.command("preprocess")(preprocess.preprocess)
app.command("segment")(segment.segment)
app.command("volumes")(volumes.volumes)
app.command("evaluate")(evaluate.evaluate)
app.command("evaluate-image")(evaluate_image.evaluate_image)
app.command("predict-post")(predict_post.predict_post)
app.command("predict-growth")(predict_growth.predict_growth)
app.command("report")(report.report)
app.command("info")(info.info)
app.command("synth-cohort")(synth_cohort.synth_cohort)
from tumorcli.cli import train_refine  # noqa: E402,F401  (registers `tumor train refine`)
from tumorcli.cli import train_postprocess  # noqa: E402,F401  (`tumor train postprocess`)
from tumorcli.cli import train_growth  # noqa: E402,F401  (`tumor train growth`)

app.add_typer(train.train_app, name="train")


def main() -> None:
    """Console-script entry point."""
    if hasattr(signal, "SIGPIPE"):  # `tumor ... | head` ends quietly, like other Unix tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()


if __name__ == "__main__":
    main()
