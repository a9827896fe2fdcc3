"""``synod mr``: run MapReduce jobs (see ``synod.mapreduce`` and docs/mapreduce.md).

    synod mr run JOB.py INPUT... -o OUTDIR [--runner inline|local|cluster] [--workers N]
                 [--reducers R] [--overwrite] [--job-class NAME] [--config FILE]
                 [--set key=value] [--cluster DIR] [--seed ID@HOST:PORT]
    synod mr worker --cluster DIR [--node NAME] [--seed ID@HOST:PORT] [--scratch PATH]
    synod mr master --cluster DIR [--identity NAME]
    synod mr jobs --cluster DIR          (the cluster's jobs and their state)
    synod mr kill --cluster DIR JOB_ID

With ``--runner cluster``, a job goes to the master elected in the cluster's lock
cell when one runs (``synod mr master``: it checkpoints the job there, and a
standby resumes it if it dies); otherwise this process is the master.

A live progress bar shows map and reduce tasks done, records/s and MB/s; a summary
with the job's counters follows. Errors (a job file that does not import, missing
inputs, an existing output directory, a task that fails) print one clear message
naming the task, file and record offset, and exit with status 1.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from synod.core.config import config_from_mapping, load_toml, parse_overrides
from synod.core.errors import ConfigError
from synod.mapreduce import (
    JobError,
    JobFailed,
    JobProgress,
    JobResult,
    MapReduceConfig,
    OutputExistsError,
    load_job,
    run_job,
)


@click.group("mr")
def mr() -> None:
    """MapReduce jobs: run them on this machine."""


class _ProgressView:
    """A rich progress display refreshed from the runner's callback (no refresh
    thread: the local runner forks workers, and forking with threads is unsafe)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            TextColumn("{task.completed:>5.0f}/{task.total:<5.0f}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console, auto_refresh=False, disable=not console.is_terminal,
        )
        self.tasks: dict[tuple[int, str], TaskID] = {}
        self.last_refresh = 0.0

    def __call__(self, update: JobProgress) -> None:
        prefix = f"step {update.step + 1} " if update.steps > 1 else ""
        elapsed = max(update.elapsed_s, 1e-6)
        rate = f"{update.records_in / elapsed:,.0f} rec/s  {update.bytes_in / elapsed / 1e6:,.1f} MB/s"
        for phase, done, total in (("map", update.maps_completed, update.maps_total),
                                   ("reduce", update.reduces_completed, update.reduces_total)):
            key = (update.step, phase)
            if key not in self.tasks:
                self.tasks[key] = self.progress.add_task(prefix + phase, total=total, rate="")
            self.progress.update(self.tasks[key], completed=done, total=total,
                                 rate=rate if phase == "map" else f"{update.workers_alive} workers")
        now = time.monotonic()
        if now - self.last_refresh >= 0.1 or update.reduces_completed == update.reduces_total:
            self.progress.refresh()
            self.last_refresh = now


def _summary(console: Console, result: JobResult) -> None:
    seconds = max(result.elapsed_s, 1e-6)
    console.print(
        f"[green]done[/green] in {result.elapsed_s:.2f} s: {result.records_in:,} records "
        f"({result.bytes_in / 1e6:,.1f} MB, {result.bytes_in / seconds / 1e6:,.1f} MB/s) in, "
        f"{result.records_out:,} records out, {len(result.parts)} parts in {result.output_dir}"
    )
    stats = result.steps
    extra = sum(s.attempts_started - s.maps_total - s.reduces_total for s in stats)
    if extra:
        console.print(
            f"re-executions and backups: {extra} extra attempts "
            f"({sum(s.backups_started for s in stats)} backups, "
            f"{sum(s.map_reexecutions for s in stats)} map tasks re-executed after worker loss)"
        )
    if result.counters:
        table = Table(title="counters", show_header=True)
        table.add_column("group")
        table.add_column("name")
        table.add_column("value", justify="right")
        for (group, name), value in sorted(result.counters.items()):
            table.add_row(group, name, f"{value:,}")
        console.print(table)
    if result.skipped:
        console.print(f"[yellow]skipped {len(result.skipped)} bad records:[/yellow]")
        for record in result.skipped[:20]:
            console.print(f"  {record.path} at byte offset {record.offset}")


@mr.command("run")
@click.argument("job_file", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Output directory (must not exist unless --overwrite).")
@click.option("--runner", type=click.Choice(["inline", "local", "cluster"]), default="local",
              show_default=True,
              help="inline: one process (for a debugger); local: a master and N worker processes; "
                   "cluster: the `synod mr worker`s of a cluster.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes (default: cores).")
@click.option("--reducers", type=click.IntRange(min=1), default=None, help="Reduce tasks R (default: workers).")
@click.option("--overwrite", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--job-class", default=None, help="The Job subclass to run, if the file defines several.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="A TOML file whose [mapreduce] table sets MapReduceConfig fields.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a MapReduceConfig field (e.g. map_buffer_bytes_max=67108864).")
@click.option("--cluster", "cluster_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --runner cluster: the `synod cluster up --data` directory.")
@click.option("--seed", "seeds", multiple=True, metavar="ID@HOST:PORT",
              help="With --runner cluster: a gossip member to join (default: the announced workers).")
def run_command(job_file: Path, inputs: tuple[Path, ...], output: Path, runner: str,
                workers: int | None, reducers: int | None, overwrite: bool, job_class: str | None,
                config_file: Path | None, overrides: tuple[str, ...], cluster_dir: Path | None,
                seeds: tuple[str, ...]) -> None:
    """Run the job in JOB_FILE over INPUT files or directories into OUTPUT."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        config = MapReduceConfig.local()
        if config_file is not None:
            table = load_toml(config_file).get("mapreduce", {})
            if not isinstance(table, dict):
                raise ConfigError(f"config file {config_file}: [mapreduce] must be a table")
            config = config_from_mapping(MapReduceConfig, table, base=config)
        config = config_from_mapping(MapReduceConfig, parse_overrides(overrides), base=config)
        job = load_job(job_file, job_class)
        cluster = None
        if runner == "cluster":
            from synod.mapreduce.cluster import ClusterTarget
            from synod.mapreduce.cluster_master import master_elected

            if cluster_dir is None:
                raise ConfigError("--runner cluster needs --cluster DIR (the `synod cluster up --data` directory)")
            if not seeds and master_elected(cluster_dir) is not None:
                _submit(console, cluster_dir, job_file, inputs, output, job_class=job_class, workers=workers,
                        reducers=reducers, config=config, overwrite=overwrite)
                return
            cluster = ClusterTarget.from_dir(cluster_dir, seeds)
        view = _ProgressView(console)
        with view.progress:
            result = run_job(job, list(inputs), output, runner=runner, workers=workers,
                             reducers=reducers, overwrite=overwrite, config=config, progress=view,
                             cluster=cluster)
    except (JobError, ConfigError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        if isinstance(error, JobFailed) and error.failure is not None and error.failure.detail:
            console.print(error.failure.detail.rstrip(), highlight=False, markup=False)
        if not isinstance(error, OutputExistsError):
            console.print(f"no output was left behind in {output}", highlight=False)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]; the output directory was removed")
        raise SystemExit(130) from None
    _summary(console, result)


def _submit(console: Console, cluster_dir: Path, job_file: Path, inputs: tuple[Path, ...], output: Path, *,
            job_class: str | None, workers: int | None, reducers: int | None, config: MapReduceConfig,
            overwrite: bool) -> None:
    from synod.mapreduce.cluster_master import submit_job

    outcome = submit_job(
        cluster_dir, job_file, list(inputs), output, job_class=job_class or "", workers=workers,
        reducers=reducers, config=config, overwrite=overwrite,
        on_submitted=lambda job_id: console.print(f"submitted {job_id} to the cluster's master; waiting"),
    )
    if not outcome.ok:
        console.print(f"[red]error:[/red] {outcome.error}", highlight=False)
        if outcome.detail:
            console.print(outcome.detail.rstrip(), highlight=False, markup=False)
        raise SystemExit(1)
    masters = (f" (run by {outcome.masters} masters in turn; the last took {outcome.recalled} "
               f"tasks from the checkpoint)" if outcome.masters > 1 else "")
    console.print(
        f"[green]done[/green] in {outcome.elapsed_s:.2f} s{masters}: {outcome.records_in:,} records in, "
        f"{outcome.records_out:,} records out, {len(outcome.parts)} parts in {output}", highlight=False)
    for counter in outcome.counters:
        console.print(f"  {counter.group}/{counter.name} = {counter.value:,}", highlight=False)


@mr.command("master")
@click.option("--cluster", "cluster_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The `synod cluster up --data` directory of a lock cell.")
@click.option("--identity", default=None, help="This master's name (default: mr-master-<host>-<pid>).")
def master_command(cluster_dir: Path, identity: str | None) -> None:
    """Stand for election as the cluster's MapReduce master; once elected, run
    submitted jobs, checkpointing them in the lock cell."""
    import os
    import socket

    from synod.mapreduce.cluster_master import run_master_process

    try:
        run_master_process(cluster_dir, identity=identity or f"mr-master-{socket.gethostname()}-{os.getpid()}")
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None


@mr.command("jobs")
@click.option("--cluster", "cluster_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The `synod cluster up --data` directory of a lock cell.")
def jobs_command(cluster_dir: Path) -> None:
    """The jobs submitted to the cluster's masters and their state."""
    from synod.mapreduce.cluster_master import list_jobs, master_elected

    console = Console(soft_wrap=True)
    try:
        leader = master_elected(cluster_dir)
        jobs = list_jobs(cluster_dir)
    except (ConfigError, JobError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise SystemExit(1) from None
    console.print(f"master: {leader or 'none elected'}", highlight=False)
    table = Table(show_header=True)
    table.add_column("job", no_wrap=True)  # ids are copied into `synod mr kill`
    for column in ("state", "masters", "maps done", "reduces done", "output"):
        table.add_column(column)
    for job in jobs:
        state = job.state + (f": {job.error}" if job.error else "")
        table.add_row(job.job_id, state, str(job.masters), str(job.maps_checkpointed),
                      str(job.reduces_checkpointed), job.output)
    console.print(table)


@mr.command("kill")
@click.option("--cluster", "cluster_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The `synod cluster up --data` directory of a lock cell.")
@click.argument("job_id")
def kill_command(cluster_dir: Path, job_id: str) -> None:
    """Kill a job running on the cluster (its output is removed)."""
    from synod.mapreduce.cluster_master import kill_job

    try:
        kill_job(cluster_dir, job_id)
    except (ConfigError, JobError) as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
    click.echo(f"asked the master to kill {job_id}")


@mr.command("worker")
@click.option("--cluster", "cluster_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The `synod cluster up --data` directory (secret, client key).")
@click.option("--node", default=None, help="This worker's id (default: mr-<host>-<pid>).")
@click.option("--seed", "seeds", multiple=True, metavar="ID@HOST:PORT",
              help="A gossip member to join (default: the workers announced in the cluster directory).")
@click.option("--scratch", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for map output (default: a temporary one, removed on exit).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
def worker_command(cluster_dir: Path, node: str | None, seeds: tuple[str, ...], scratch: Path | None,
                   host: str) -> None:
    """Serve as a MapReduce worker of a cluster until SIGTERM or Ctrl-C."""
    import os
    import socket

    from synod.mapreduce.cluster_worker import run_worker_process

    try:
        run_worker_process(cluster_dir, node=node or f"mr-{socket.gethostname()}-{os.getpid()}",
                           seeds=seeds, scratch_dir=scratch, host=host)
    except ConfigError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None


def register(group: click.Group) -> None:
    group.add_command(mr)
