"""The tour runner: steps, their checks, and the summary table."""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One thing a step verified: a name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(slots=True, kw_only=True)
class StepContext:
    """What a step gets: a console to narrate on and a scratch directory."""

    console: Console
    workdir: Path
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name=name, ok=ok, detail=detail))
        mark = "[green]ok[/green]" if ok else "[red]FAILED[/red]"
        self.console.print(f"   {mark}  {name}" + (f" [dim]({detail})[/dim]" if detail else ""))
        return ok

    def say(self, text: str) -> None:
        self.console.print(f"   {text}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """A step of the tour: a title, the explanation printed before it, and the
    function that runs it (recording checks on the context)."""

    title: str
    explanation: str
    run: Callable[[StepContext], None]


#: Modules contributing steps, in tour order. A listed module that does not exist
#: yet is skipped, so blocks can land one at a time.
STEP_MODULES = (
    "synod.demo.foundation",
    "synod.demo.gossip",
    "synod.demo.paxos",
    "synod.demo.lock",
    "synod.demo.txn",
    "synod.demo.mapreduce",
)


def collect_steps(only: tuple[str, ...] = ()) -> list[Step]:
    steps: list[Step] = []
    for name in STEP_MODULES:
        if only and name.rsplit(".", 1)[-1] not in only:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        steps.extend(module.STEPS)
    return steps


def run_tour(workdir: Path, *, only: tuple[str, ...] = (), console: Console | None = None) -> bool:
    """Run every step; print the summary; return True when every check held."""
    console = console or Console()
    steps = collect_steps(only)
    context = StepContext(console=console, workdir=workdir)
    started = time.monotonic()
    for number, step in enumerate(steps, start=1):
        console.rule(f"[bold]{number}. {step.title}")
        console.print(step.explanation.strip(), style="italic")
        before = len(context.checks)
        step_started = time.monotonic()
        try:
            step.run(context)
        except Exception as error:  # a failing step is reported, and the tour goes on
            context.check(f"{step.title}: ran to the end", False, f"{type(error).__name__}: {error}")
            console.print(traceback.format_exc(), style="dim")
        if len(context.checks) == before:
            context.check(f"{step.title}: made at least one check", False)
        console.print(f"   [dim]{time.monotonic() - step_started:.1f} s[/dim]")
    table = Table(title="synod demo: what was checked")
    table.add_column("step / check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for check in context.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail)
    console.print(table)
    failed = [c for c in context.checks if not c.ok]
    total = len(context.checks)
    elapsed = time.monotonic() - started
    if failed:
        console.print(f"[red bold]{len(failed)} of {total} checks failed[/red bold] in {elapsed:.1f} s")
    else:
        console.print(f"[green bold]all {total} checks passed[/green bold] in {elapsed:.1f} s")
    return bool(steps) and not failed
