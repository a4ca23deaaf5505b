"""`python -m worker …`: the commands operators and developers use, registered here; each
lives beside what it runs."""

from __future__ import annotations

from typing import Any

import click

from worker import commands
from worker.demo import commands as demo_commands
from worker.devenv import commands as devenv_commands
from worker.ops.commands import (
    dlq,
    preflight,
    reconcile,
    registers,
    rejections,
    status,
    tenant,
    whatif,
)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from worker.build import describe

    click.echo(describe())
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="The version and the commit it was built from.",
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Flyt → Xledger worker: posts Betalt child-welfare payments to Xledger."""
    ctx.obj = registers.DemoSnapshots(_demo_snapshots)  # for `publish-registers --demo`


def _demo_snapshots() -> list[dict[str, Any]]:
    from worker.demo.registers import demo_snapshot_dicts

    return demo_snapshot_dicts()


# The worker itself: worker/commands.py.
main.add_command(commands.run)
main.add_command(commands.enrich)
main.add_command(commands.bench)
# The demo and the reliability campaign: worker/demo/commands.py.
main.add_command(demo_commands.demo)
main.add_command(demo_commands.demo_data)
main.add_command(demo_commands.offline_demo)
main.add_command(demo_commands.chaos)
# The development tools: worker/devenv/commands.py.
main.add_command(devenv_commands.broker)
main.add_command(devenv_commands.kafka)
main.add_command(devenv_commands.sandbox)

# The operator commands: worker/ops/commands/, one module per command or group.
main.add_command(dlq.dlq)
main.add_command(rejections.rejections)
main.add_command(status.status)
main.add_command(tenant.tenant)
main.add_command(whatif.whatif)
main.add_command(preflight.preflight_command, "preflight")
main.add_command(reconcile.reconcile)
main.add_command(registers.publish_registers)
