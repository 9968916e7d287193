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


def _watchlist(path: str | None):
    if not path:
        return None
    from audit.watchlist import WatchlistError, load

    try:
        return load(path)
    except (WatchlistError, OSError) as e:
        raise click.BadParameter(str(e), param_hint="--watchlist") from e


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

    names = _watchlist(watchlist)
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


VERDICT_CHOICES = ("allow-with-conditions", "needs-review", "deny", "never")


def _licensing_options(fn):
    """Options shared by `license` and `scan`: policies, deployer facts and asserted bases."""
    options = [
        click.option("--policy", "policies", multiple=True, metavar="NAME|FILE",
                     help="Deployment policy: a shipped id (see `lora-audit rules list policies`) or a policy "
                          "YAML file of your own. Repeatable."),
        click.option("--assume-base", "assume", multiple=True, metavar="ID",
                     help="Assert the base model (a family or variant id, e.g. flux1-schnell) for files whose "
                          "tensors allow it; recorded in the report. Repeatable."),
        click.option("--revenue", metavar="USD", help="Deployer's annual revenue incl. affiliates (e.g. 2.5M)."),
        click.option("--mau", metavar="N", help="Monthly active users of the deployer's products (e.g. 800k)."),
        click.option("--territory", metavar="CODES",
                     help="Where outputs are served or used: ISO-3166 codes or EU, comma-separated."),
        click.option("--fact", "facts", multiple=True, metavar="KEY=VALUE",
                     help="Any other deployer fact a policy reads, e.g. commercial_licenses_held=flux-dev-non-commercial "
                          "or core_business=yes. Repeatable."),
        click.option("--fail-verdict", type=click.Choice(VERDICT_CHOICES), default="deny", show_default=True,
                     help="Exit 1 when a policy verdict is at least this strict."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _settings(policies, assume, revenue, mau, territory, facts, *, default_all: bool):
    from audit import licensing

    try:
        names = list(policies) or (sorted(licensing.shipped_policies()) if default_all else [])
        loaded = tuple(licensing.load_policy(n) for n in names)
        known = licensing.base_ids()
        for a in assume:
            if a not in known:
                raise click.BadParameter(f"{a!r} is not a base family or variant id (see `lora-audit rules list "
                                         "bases`)", param_hint="--assume-base")
        values: dict[str, object] = {}
        for item in facts:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--fact")
            values[key.strip()] = licensing.parse_fact(key.strip(), value)
        for key, value in (("revenue_usd", revenue), ("mau", mau), ("territories", territory)):
            if value is not None:
                values[key] = licensing.parse_fact(key, value)
    except licensing.PolicyError as e:
        raise click.UsageError(str(e)) from e
    return licensing.Settings(policies=loaded, facts=values, assume=tuple(assume))


def _run_scan(entries, config, on_record, console, no_progress: bool):
    """``audit.scan.run`` with a rich progress bar on a terminal (shared by ``scan`` and ``report``)."""
    from audit import scan as scanning

    progress = None
    if not no_progress and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, transient=True)
    task = progress.add_task("scan", total=len(entries)) if progress else None

    def on_progress(done: int, total: int, path: str, cached: bool) -> None:
        if progress is not None:
            progress.update(task, completed=done)

    if progress is not None:
        progress.start()
    try:
        return scanning.run(entries, config, on_record, on_progress)
    finally:
        if progress is not None:
            progress.stop()


def _scan_options(fn):
    """The options that decide how ``scan`` and ``report`` run the analysis (workers, limits, cache)."""
    for deco in reversed((
        click.option("--jobs", type=click.IntRange(1, 256), default=2, show_default=True,
                     help="Worker processes; each analyses one file at a time."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
                     help="Seconds one file may take; past it the worker is stopped and the file reported (LA126)."),
        click.option("--max-memory", type=click.IntRange(min=0), default=4096, show_default=True, metavar="MB",
                     help="Address-space limit per worker; past it the file is reported (LA127). 0: no limit."),
        click.option("--keep-layers", type=click.IntRange(min=0), default=10, show_default=True,
                     help="Layer records kept per file (strongest first); the summaries always count every "
                          "layer."),
        click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=str),
                     help="SQLite cache of results (default ~/.cache/lora-audit/scan.sqlite). Unchanged files are "
                          "not read again, and an interrupted scan resumes where it stopped."),
        click.option("--no-cache", is_flag=True, help="Analyse every file and keep nothing."),
        click.option("--no-progress", is_flag=True, help="No progress bar on standard error."),
        click.option("--watchlist", type=click.Path(exists=True, dir_okay=False, path_type=str),
                     help="Names of artists or people to look for (see inspect --watchlist)."),
        click.option("--no-sidecars", is_flag=True, help="Do not read model cards or Civitai sidecars."),
        click.option("--device", type=click.Choice(["cpu", "auto", "cuda"]), default="cpu", show_default=True,
                     help="Where the workers compute spectra. The memory limit cannot be enforced on a GPU, so "
                          "the scan stays on the CPU unless asked."),
    )):
        fn = deco(fn)
    return fn


def _scan_config(settings, *, jobs, timeout, max_memory, keep_layers, cache_path, no_cache, watchlist,
                 no_sidecars, device):
    from audit import scan as scanning
    from audit.analyse import Options

    options = Options(device=device, licensing=settings, watchlist=_watchlist(watchlist), sidecars=not no_sidecars)
    return scanning.ScanConfig(jobs=jobs, timeout_s=timeout, memory_mb=max_memory or None, keep_layers=keep_layers,
                               options=options, cache=not no_cache, cache_path=cache_path)


def _check_out(path: str | None, option: str) -> None:
    """Fail before any work when an output file cannot be created (its folder is missing)."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder!r} does not exist", param_hint=option)
    if os.path.isdir(path):
        raise click.BadParameter(f"{path!r} is a folder", param_hint=option)


def _write_html(path: str, views, console) -> None:
    """Render views made by audit.reports.html.file_view and write them atomically; a failure exits 2."""
    from audit.reports import html

    try:
        _write_atomic(path, html.render_views(views))
    except Exception as e:  # a renderer bug or a write error: say so, never exit as if it were a verdict
        console.print(f"HTML report not written: {type(e).__name__}: {e}")
        sys.exit(EXIT_ERROR)
    console.print(f"HTML report written to {path}", soft_wrap=True)


class _Judge:
    """The exit code of `license`, `scan` and `report`, from each file's status and findings as they arrive: 2 when
    a file could not be read, 1 when a policy verdict is at least --fail-verdict (the verdict's LA400-LA402
    finding) or a finding is at or above --fail-on, else 0."""

    def __init__(self, fail_on: str, fail_verdict: str):
        from audit.findings import SEVERITY_RANK

        self.rank = SEVERITY_RANK
        self.verdict_codes = _VERDICT_CODES.get(fail_verdict, ())
        self.threshold = SEVERITY_RANK.get(fail_on)
        self.error = self.verdict = self.finding = False

    def add(self, status: str, findings) -> None:
        """``findings``: (code, severity) pairs."""
        if status == "error":
            self.error = True
        for code, severity in findings:
            if code in self.verdict_codes:
                self.verdict = True
            if self.threshold is not None and self.rank[severity] >= self.threshold:
                self.finding = True

    def code(self) -> int:
        if self.error:
            return EXIT_ERROR
        return EXIT_FINDINGS if self.verdict or self.finding else EXIT_CLEAN


@cli.command("license")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=True, file_okay=True, path_type=str))
@_licensing_options
@click.option("--json", "as_json", is_flag=True, help="Print each AuditRecord as JSON (one per line).")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
              help="Exit 1 when a finding at or above this severity remains.")
@click.option("--no-sidecars", is_flag=True, help="Do not read a model card or Civitai sidecar beside the file.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, writable=True, path_type=str),
              help="Write the JSON records to this file (atomically).")
def license_(files, policies, assume, revenue, mau, territory, facts, fail_verdict, as_json, fail_on,
             no_sidecars, out) -> None:
    """The license chain of each adapter FILE and the verdict of each deployment policy (all shipped policies
    unless --policy is given). Not legal advice: every reason cites the license text, clause and URL."""
    from audit.analyse import Options, inspect_file

    settings = _settings(policies, assume, revenue, mau, territory, facts, default_all=True)
    options = Options(hashes=False, spectrum=False, sidecars=not no_sidecars, licensing=settings)
    records = [inspect_file(f, options) for f in files]
    if as_json or out:
        doc = "".join(r.to_json() + "\n" for r in records)
        if out:
            _write_atomic(out, doc)
        else:
            click.echo(doc, nl=False)
    else:
        from audit.reports import license_view

        console = _console()
        for i, record in enumerate(records):
            if i:
                console.print()
            license_view.render(record, console)
    judge = _Judge(fail_on, fail_verdict)
    for record in records:
        judge.add(record.status, ((f.code, f.severity) for f in record.findings))
    sys.exit(judge.code())


SCAN_FORMATS = ("table", "json", "jsonl", "sarif", "junit")
#: finding codes that carry a policy verdict, strictest first (audit/licensing)
_VERDICT_CODES = {"deny": ("LA400",), "needs-review": ("LA400", "LA401"),
                  "allow-with-conditions": ("LA400", "LA401", "LA402")}


@cli.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=True, file_okay=True, path_type=str))
@_licensing_options
@click.option("--format", "fmt", type=click.Choice(SCAN_FORMATS), default="table", show_default=True,
              help="table: one line per file as it finishes, then counts; json: one document; jsonl: one "
                   "AuditRecord per line; sarif: SARIF 2.1.0; junit: JUnit XML for CI.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, writable=True, path_type=str),
              help="Write the output here; it appears whole when the scan completes (atomic), never partial.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
              help="Exit 1 when a finding at or above this severity is reported.")
@click.option("--summary-json", type=click.Path(dir_okay=False, writable=True, path_type=str),
              help="Write the run's counts, timings and per-worker peak memory as JSON.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, writable=True, path_type=str),
              help="Also write the HTML compliance report of the scanned files here (as `lora-audit report`, "
                   "with the policies given by --policy).")
@_scan_options
def scan(paths, policies, assume, revenue, mau, territory, facts, fail_verdict, fmt, out, jobs, fail_on, timeout,
         max_memory, keep_layers, cache_path, no_cache, no_progress, summary_json, html_out, watchlist, no_sidecars,
         device) -> None:
    """Scan files and folders (recursively; adapters are found by content) against deployment policies.

    Each file is analysed in a worker process with a time and a memory limit, so a broken or hostile file
    becomes an error row and the rest goes on. Exit codes: 0 clean, 1 a policy verdict at or above
    --fail-verdict or a finding at or above --fail-on, 2 a file could not be read, 3 usage."""
    import json

    from audit import scan as scanning

    settings = _settings(policies, assume, revenue, mau, territory, facts, default_all=False)
    config = _scan_config(settings, jobs=jobs, timeout=timeout, max_memory=max_memory, keep_layers=keep_layers,
                          cache_path=cache_path, no_cache=no_cache, watchlist=watchlist, no_sidecars=no_sidecars,
                          device=device)
    entries = scanning.discover(paths)
    policy_ids = [p.id for p in settings.policies]
    console = _console(stderr=True)
    judge = _Judge(fail_on, fail_verdict)
    kept: list = []  # sarif / junit need every record at the end
    views: list = []  # the HTML report's view of each record, made as it arrives
    _check_out(out, "-o")
    _check_out(html_out, "--html")

    from audit.reports import scan_view

    tally = scan_view.Tally()

    def run_into(fh) -> scanning.Summary:
        from rich.console import Console

        table_console = Console(file=fh, highlight=False, soft_wrap=False,
                                width=None if fh is sys.stdout else 160) if fmt == "table" else None
        first = [True]
        if fmt == "table":
            scan_view.header(table_console, policy_ids)
        elif fmt == "json":
            fh.write('{"policies": ' + json.dumps(policy_ids) + ', "records": [\n')

        def on_record(result, cached: bool) -> None:
            judge.add(result.status, result.findings)
            if html_out:
                from audit.reports import html

                views.append(html.file_view(result.record, len(views), batch=len(entries) != 1))
            if fmt == "jsonl":
                fh.write(result.json + "\n")  # the stored text as is: no JSON parsing on the cached path
                return
            if fmt == "json":
                fh.write(("" if first[0] else ",\n") + result.json)
                first[0] = False
            record = result.record
            tally.add(record, cached=cached)
            if fmt == "table":
                scan_view.row(table_console, record, policy_ids)
            elif fmt in ("sarif", "junit"):
                record.layers, record.blocks = [], []
                kept.append(record)

        summary = _run_scan(entries, config, on_record, console, no_progress)
        tally.seconds = summary.seconds
        if fmt == "table":
            scan_view.summary(table_console, tally)
        elif fmt == "json":
            fh.write("\n], " + json.dumps({"schema_version": _schema(), "summary": summary.to_dict(),
                                           "tool": {"name": "lora-audit", "version": __version__}},
                                          sort_keys=True)[1:] + "\n")
        elif fmt == "sarif":
            from audit.reports import sarif

            fh.write(sarif.render(kept, tool_version=__version__, base_uri=os.getcwd()) + "\n")
        elif fmt == "junit":
            from audit.reports import junit

            fh.write(junit.render(kept, suite="lora-audit scan", fail_on=fail_on, fail_verdict=fail_verdict) + "\n")
        return summary

    try:
        if out:
            with scanning.AtomicOutput(out) as fh:
                summary = run_into(fh)
        else:
            summary = run_into(sys.stdout)
            sys.stdout.flush()
    except KeyboardInterrupt:
        console.print("interrupted: the files finished so far are cached; run the same scan again to finish"
                      + (" (no output written)" if out or html_out else ""))
        sys.exit(130)
    except scanning.ScanError as e:
        console.print(f"scan failed: {e}")
        sys.exit(EXIT_ERROR)
    if summary_json:
        _write_atomic(summary_json, json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    if html_out:
        _write_html(html_out, views, console)
    if fmt != "table" and out and not no_progress:
        console.print(f"{summary.total} files ({summary.analysed} analysed, {summary.cached} cached, "
                      f"{summary.errors} errors) in {summary.seconds:.1f} s; output written to {out}")
    sys.exit(judge.code())


@cli.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=True, file_okay=True, path_type=str))
@_licensing_options
@click.option("-o", "--out", type=click.Path(dir_okay=False, writable=True, path_type=str),
              default="lora-audit-report.html", show_default=True,
              help="The HTML file to write (atomically: it appears whole or not at all).")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
              help="Exit 1 when a finding at or above this severity is reported.")
@_scan_options
def report(paths, policies, assume, revenue, mau, territory, facts, fail_verdict, out, fail_on, jobs, timeout,
           max_memory, keep_layers, cache_path, no_cache, no_progress, watchlist, no_sidecars, device) -> None:
    """Write one self-contained HTML compliance report for adapter files and folders.

    Every shipped policy is evaluated unless --policy is given. The analysis runs as in `scan` (isolated
    workers, limits, cache); the report is a single file with no external requests, safe to open even when an
    adapter was crafted to attack its reader. Exit codes as for `scan`."""
    from audit import scan as scanning

    settings = _settings(policies, assume, revenue, mau, territory, facts, default_all=True)
    config = _scan_config(settings, jobs=jobs, timeout=timeout, max_memory=max_memory, keep_layers=keep_layers,
                          cache_path=cache_path, no_cache=no_cache, watchlist=watchlist, no_sidecars=no_sidecars,
                          device=device)
    _check_out(out, "-o")
    entries = scanning.discover(paths)
    console = _console(stderr=True)
    if not entries:
        raise click.UsageError("no adapter files found under the given paths")
    judge = _Judge(fail_on, fail_verdict)
    views: list = []

    def on_record(result, cached: bool) -> None:
        from audit.reports import html

        judge.add(result.status, result.findings)
        views.append(html.file_view(result.record, len(views), batch=len(entries) != 1))

    try:
        _run_scan(entries, config, on_record, console, no_progress)
    except KeyboardInterrupt:
        console.print("interrupted: the files finished so far are cached; no report written")
        sys.exit(130)
    except scanning.ScanError as e:
        console.print(f"report failed: {e}")
        sys.exit(EXIT_ERROR)
    _write_html(out, views, console)
    sys.exit(judge.code())


def _schema() -> str:
    from audit.record import SCHEMA_VERSION

    return SCHEMA_VERSION


@cli.group()
def probe() -> None:
    """Generate paired images with and without an adapter and test whether it captures a style or a likeness.

    Needs the probe dependencies (torch, torchvision, diffusers, transformers, peft, open_clip_torch) and local
    files only: the base model (a diffusers folder, or a single checkpoint with --base-config), CLIP weights,
    reference images and, for specificity, control folders. Exit codes: 0 not captured, 1 captured (LA500),
    2 an input could not be used, 3 usage."""


def _probe_options(fn):
    for deco in reversed((
        click.option("--base", required=True, type=click.Path(exists=True, path_type=str),
                     help="Base model: a local diffusers folder, or a single-file checkpoint (with --base-config)."),
        click.option("--base-config", type=click.Path(exists=True, file_okay=False, path_type=str),
                     help="Local diffusers config folder for a single-file base (nothing is fetched)."),
        click.option("--lora", required=True, type=click.Path(exists=True, path_type=str),
                     help="The adapter, in any format lora-audit reads (diffusers converts it)."),
        click.option("--refs", required=True, type=click.Path(exists=True, file_okay=False, path_type=str),
                     help="Folder of reference images: the artist's works, or photos of the person."),
        click.option("--controls", "controls", multiple=True, type=click.Path(exists=True, file_okay=False,
                                                                             path_type=str),
                     help="Folder of another artist's works (or another person's photos). Repeatable; 19 or "
                          "more make the panel test meaningful."),
        click.option("--clip-model", required=True, metavar="NAME|local-dir:FOLDER",
                     help="open_clip architecture (e.g. ViT-L-14) with --clip-weights, or a local-dir: folder."),
        click.option("--clip-weights", type=click.Path(exists=True, dir_okay=False, path_type=str),
                     help="Local open_clip checkpoint for --clip-model NAME."),
        click.option("--trigger", default="auto", show_default=True, metavar="WORD|auto|none",
                     help="Trigger word for the trigger arm; auto takes it from the adapter's metadata."),
        click.option("--quick", is_flag=True, help="Few pairs and steps (8 subjects x 2 seeds, 15 steps): CPU."),
        click.option("--steps", type=click.IntRange(1, 200), help="Denoising steps (default 25, 15 with --quick)."),
        click.option("--size", type=click.IntRange(8, 4096), help="Image size in pixels (default: the pipeline's)."),
        click.option("--guidance", type=float, help="Guidance scale (default: the pipeline's)."),
        click.option("--lora-scale", type=float, default=1.0, show_default=True),
        click.option("--batch-size", type=click.IntRange(1, 256), default=4, show_default=True),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--out", "out", type=click.Path(dir_okay=False, path_type=str),
                     help="Write the adapter's AuditRecord with the probe result as JSON."),
        click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=str),
                     help="Write the HTML report of the adapter with the probe result."),
        click.option("--contact-sheet", type=click.Path(dir_okay=False, path_type=str),
                     help="PNG with base and LoRA images side by side (default: beside --out or --html)."),
        click.option("--save-images", type=click.Path(file_okay=False, path_type=str),
                     help="Folder to save every generated image."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    )):
        fn = deco(fn)
    return fn


def _run_probe(mode: str, kw: dict) -> None:
    from audit.analyse import Options, inspect_file
    from audit.reports.safe import clean

    console = _console(stderr=True)
    for key, option in (("out", "--out"), ("html_out", "--html"), ("contact_sheet", "--contact-sheet")):
        _check_out(kw.get(key), option)
    try:
        from audit.probe.run import ProbeConfig, run_probe
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise click.UsageError(f"the probe needs its dependencies: pip install 'lora-audit[probe]' ({e})") from e
    sheet = kw["contact_sheet"]
    if sheet is None and (kw["out"] or kw["html_out"]):
        sheet = os.path.splitext(kw["out"] or kw["html_out"])[0] + "-contact-sheet.png"
    record = inspect_file(kw["lora"], Options(device="cpu", licensing=_settings((), (), None, None, None, (),
                                                                                 default_all=True)))
    if record.status == "error":
        console.print(f"the adapter could not be read: {record.error.code} {clean(record.error.message)}")
        sys.exit(EXIT_ERROR)
    cfg = ProbeConfig(base=kw["base"], lora=kw["lora"], refs=kw["refs"], mode=mode, controls=tuple(kw["controls"]),
                      base_config=kw["base_config"], trigger=kw["trigger"], quick=kw["quick"], steps=kw["steps"],
                      guidance=kw["guidance"], size=kw["size"], lora_scale=kw["lora_scale"], device=kw["device"],
                      batch_size=kw["batch_size"], clip_model=kw["clip_model"], clip_weights=kw["clip_weights"],
                      save_images=kw["save_images"], contact_sheet=sheet)
    progress = None
    if not kw["no_progress"] and console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, transient=True)
        task = progress.add_task("probe", total=None)
        progress.start()
    try:
        result = run_probe(cfg, record=record, progress=(lambda done, total: progress.update(
            task, completed=done, total=total)) if progress else None)
    except (OSError, ValueError) as e:
        console.print(f"probe failed: {clean(str(e), 300)}")
        sys.exit(EXIT_ERROR)
    finally:
        if progress is not None:
            progress.stop()
    record.probe = result.to_dict()
    record.findings.extend(result.findings)
    from audit.reports import probe_view

    probe_view.render(result, _console())
    if kw["out"]:
        from audit.reports.json_report import render as render_json

        _write_atomic(kw["out"], render_json(record) + "\n")
        console.print(f"JSON record with the probe result written to {kw['out']}", soft_wrap=True)
    if kw["html_out"]:
        from audit.reports.html import file_view

        image = None
        if result.artifacts.get("contact_sheet"):  # inline in the report as a JPEG at most 960 px wide
            import io

            from PIL import Image

            with Image.open(result.artifacts["contact_sheet"]) as im:
                im = im.convert("RGB")
                im.thumbnail((960, 4 * 960))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=80)
            image = buf.getvalue()
        _write_html(kw["html_out"], [file_view(record, 0, batch=False, probe_image=image)], console)
    sys.exit(EXIT_FINDINGS if result.verdict == "captured" else EXIT_CLEAN)


@probe.command("style")
@_probe_options
def probe_style(**kw) -> None:
    """Does the adapter move generated images toward the style of the works in --refs, more than toward the
    control artists?"""
    _run_probe("style", kw)


@probe.command("likeness")
@_probe_options
def probe_likeness(**kw) -> None:
    """Does the adapter move generated images toward the person in the --refs photos, more than toward the
    control people?"""
    _run_probe("likeness", kw)


@cli.group()
def rules() -> None:
    """The knowledge lora-audit applies: licenses, policies, base families and finding codes."""


def _rules_data(kind: str):
    from audit import fingerprint, licensing
    from audit.findings import catalogue

    return {"licenses": lambda: licensing.knowledge().licenses, "policies": licensing.shipped_policies,
            "bases": fingerprint.load_rules, "findings": catalogue}[kind]()


@rules.command("list")
@click.argument("kind", required=False, type=click.Choice(("licenses", "policies", "bases", "findings")))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def rules_list(kind: str | None, as_json: bool) -> None:
    """List the shipped licenses, policies, base families and finding codes (or one KIND)."""
    import json

    from audit.reports import rules_view

    kinds = [kind] if kind else list(rules_view.KINDS)
    tables = {k: rules_view.rows(k, _rules_data(k)) for k in kinds}
    if as_json:
        click.echo(json.dumps(tables if not kind else tables[kind], indent=2, sort_keys=True))
        return
    console = _console()
    for k in kinds:
        rules_view.render_list(console, k, tables[k])


@rules.command("show")
@click.argument("ident")
def rules_show(ident: str) -> None:
    """Show one license, policy, base family or variant, or finding code, as the rules file states it."""
    from audit.reports import rules_view

    from audit import licensing
    from audit.rulefiles import package

    pkg = package()
    console = _console()
    code = ident.upper()
    if code in _rules_data("findings"):
        f = _rules_data("findings")[code]
        rules_view.render_source(console, f"{f.code} ({f.severity})", f.title)
        return
    if ident in licensing.knowledge().licenses:
        rules_view.render_source(console, f"rules/licenses/{ident}.yaml",
                                 pkg.joinpath("licenses", f"{ident}.yaml").read_text(encoding="utf-8"))
        return
    if ident in licensing.shipped_policies():
        rules_view.render_source(console, f"rules/policies/{ident}.yaml",
                                 pkg.joinpath("policies", f"{ident}.yaml").read_text(encoding="utf-8"))
        return
    ids = licensing.base_ids()
    if ident in ids:
        fam = ids[ident]
        entry = licensing.knowledge().lineage.get(ident) or licensing.knowledge().lineage.get(fam)
        if entry is not None:
            chain = ", ".join(f"{lid} ({role})" for lid, role in entry.chain)
            rules_view.render_source(console, f"rules/lineage.yaml: {ident}",
                                     f"licenses: {chain}\nsource: {entry.source}" + (f"\nnote: {entry.note}" if entry.note else ""))
        rules_view.render_source(console, f"rules/bases/{fam}.yaml",
                                 pkg.joinpath("bases", f"{fam}.yaml").read_text(encoding="utf-8"))
        return
    raise click.UsageError(f"{ident!r} is no license, policy, base or finding code (see `lora-audit rules list`)")


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=str), default="lora-audit-demo",
              show_default=True, help="Where the demo writes its example copy and outputs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def demo(out_dir: str, device: str) -> None:
    """Inspect the bundled example LoRA; write its JSON record and its HTML compliance report."""
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
    settings = _settings((), (), None, None, None, (), default_all=True)  # every shipped policy
    record = inspect_file(example, Options(device=device, licensing=settings))
    render(record, console)
    json_path = os.path.join(out_dir, "demo-sd15-kohya.json")
    _write_atomic(json_path, render_json(record) + "\n")
    console.print(f"\nJSON record written to {json_path}")
    from audit.reports.html import file_view

    _write_html(os.path.join(out_dir, "demo-sd15-kohya.html"), [file_view(record, 0, batch=False)], console)
    sys.exit(EXIT_ERROR if record.status == "error" else EXIT_CLEAN)


def _write_atomic(path: str, content: str) -> None:
    from audit.scan import AtomicOutput

    with AtomicOutput(path) as fh:
        fh.write(content)


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
