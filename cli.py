"""lora-audit command line: a thin click front end over the audit package.

Exit codes (all commands):
  0  clean: no finding at or above --fail-on
  1  at least one finding at or above --fail-on
  2  a file could not be read (coded LA1xx error)
  3  usage error (bad option, missing file argument)
"""

from __future__ import annotations

import os
import sys

# The spectra engine runs many small batched factorisations; BLAS thread pools gain nothing there and
# busy-wait badly when several processes share the cores (a 1536x1536 QR went from 1.3 s to 37 s on two
# contended cores). One thread per process unless the user asks otherwise; set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import click  # noqa: E402

from audit import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3
FAIL_ON = ("info", "warning", "error", "critical", "never")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _codes(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        out.extend(p.strip().upper() for p in v.split(",") if p.strip())
    return tuple(out)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lora-audit")
def cli() -> None:
    """Forensics and governance auditing of LoRA adapters for diffusion models."""


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=True, file_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the full AuditRecord as JSON (schema_version inside).")
@click.option("--layers", "all_layers", is_flag=True, help="List every layer, not only the strongest ten.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where singular spectra are computed; auto uses a GPU only when one is present.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
              help="Exit 1 when a finding at or above this severity remains after --select/--ignore.")
@click.option("--select", multiple=True, metavar="CODES",
              help="Only report these finding codes or prefixes (e.g. LA2,LA153). Repeatable.")
@click.option("--ignore", multiple=True, metavar="CODES", help="Do not report these codes or prefixes. Repeatable.")
@click.option("--no-spectrum", is_flag=True, help="Leave per-layer singular values out of the JSON record.")
@click.option("--watchlist", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Names of artists or people, one per line ('Name | alias | alias'); each one found in tags, "
                   "trigger words, output name, dataset folders or the file name is a finding (LA309).")
@click.option("--no-sidecars", is_flag=True,
              help="Do not read a README.md model card or Civitai/WebUI sidecar beside the file.")
@click.option("--no-hashes", is_flag=True, help="Skip the Civitai-compatible hashes (one pass over the file).")
@click.option("--no-fingerprint", is_flag=True, help="Skip the base-model fingerprint and the claim checks.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, writable=True, path_type=str),
              help="Write the JSON record to this file (atomically) instead of standard output.")
def inspect(file: str, as_json: bool, all_layers: bool, device: str, fail_on: str, select, ignore,
            no_spectrum: bool, watchlist: str | None, no_sidecars: bool, no_hashes: bool, no_fingerprint: bool,
            out: str | None) -> None:
    """Inspect one adapter FILE (or a PEFT/diffusers directory): format, adapter kinds, ranks, scales,
    per-block strength, health, base-model fingerprint, training metadata and claims, hashes."""
    from audit.analyse import Options, inspect_file
    from audit.findings import at_or_above
    from audit.findings import select as select_findings

    names = None
    if watchlist:
        from audit.watchlist import WatchlistError, load

        try:
            names = load(watchlist)
        except (WatchlistError, OSError) as e:
            raise click.BadParameter(str(e), param_hint="--watchlist") from e
    options = Options(device=device, spectrum=not no_spectrum, watchlist=names, sidecars=not no_sidecars,
                      hashes=not no_hashes, fingerprint=not no_fingerprint)
    try:
        record = inspect_file(file, options)
    except RuntimeError as e:  # a device that was asked for and is not there
        raise click.UsageError(str(e)) from e
    record.findings = select_findings(record.findings, _codes(select), _codes(ignore))
    if as_json or out:
        from audit.reports.json_report import render as render_json

        doc = render_json(record)
        if out:
            _write_atomic(out, doc + "\n")
        else:
            click.echo(doc)
    else:
        from audit.reports.terminal import render

        render(record, _console(), all_layers=all_layers)
    if record.status == "error":
        sys.exit(EXIT_ERROR)
    if fail_on != "never" and at_or_above(record.findings, fail_on):
        sys.exit(EXIT_FINDINGS)
    sys.exit(EXIT_CLEAN)


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str), default="lora-audit-demo",
              show_default=True, help="Where the demo writes its example copy and outputs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def demo(out_dir: str, device: str) -> None:
    """Inspect the bundled example LoRA and write its JSON record."""
    import shutil
    from importlib import resources

    from audit.reports.json_report import render as render_json
    from audit.reports.terminal import render

    from audit.analyse import Options, inspect_file

    os.makedirs(out_dir, exist_ok=True)
    src = resources.files("audit").joinpath("examples", "demo-sd15-kohya.safetensors")
    example = os.path.join(out_dir, "demo-sd15-kohya.safetensors")
    with resources.as_file(src) as p:
        shutil.copyfile(p, example)
    console = _console()
    console.print(f"lora-audit {__version__} demo: inspecting the bundled example {example}\n")
    record = inspect_file(example, Options(device=device))
    render(record, console)
    json_path = os.path.join(out_dir, "demo-sd15-kohya.json")
    _write_atomic(json_path, render_json(record) + "\n")
    console.print(f"\nJSON record written to {json_path}")
    sys.exit(EXIT_ERROR if record.status == "error" else EXIT_CLEAN)


def _write_atomic(path: str, content: str) -> None:
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lora-audit-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps click's usage errors to exit code 3."""
    try:
        rv = cli.main(args=argv, prog_name="lora-audit", standalone_mode=False)
    except click.UsageError as e:
        e.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE)
    sys.exit(rv if isinstance(rv, int) else EXIT_CLEAN)


if __name__ == "__main__":  # pragma: no cover
    main()
