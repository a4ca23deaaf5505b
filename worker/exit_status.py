"""Exit statuses every command shares: a setting that cannot work is 78 (EX_CONFIG), for
`worker run` as for the operator commands and the demo, so that a supervisor or a CronJob
tells a setting to fix (restarting cannot help) from a crash or a broker away (1)."""

from __future__ import annotations

import click


class SettingsRefused(click.ClickException):
    """The settings cannot work (a value, a combination, a connection setting): exit 78."""

    exit_code = 78
