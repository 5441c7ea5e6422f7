"""`prefect.yaml`, generated from the declaration, so `prefect deploy --all` deploys what `interlink serve` serves.

    python -m interlink.deployments.prefect_yaml > prefect.yaml    # after every change to deployments.yaml

Each deployment gets its description (owner, SLA, timezone), its entrypoint (`interlink.deployments.runner:DEPLOYED.<integration>.<flow>`, whose flow carries
the declared retries: a deployment cannot), its schedule in the declared timezone, parameters, tags,
concurrency limit and the declared work pool, whose runs send heartbeats (for the crashed-run automation). The file has no `pull` steps: `prefect deploy` then adds
Prefect's default, a `set_working_directory` to the folder it ran in, so a process worker runs the
code installed there.
"""

from __future__ import annotations

import sys

import yaml
from interlink.deployments import prune
from interlink.deployments.automations import HEARTBEAT_S
from interlink.deployments.declaration import Declarations
from interlink.deployments.runner import declarations

HEARTBEAT = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}  # pooled runs send heartbeats, as served ones do

HEADER = """\
# Generated from deployments/deployments.yaml by `python -m interlink.deployments.prefect_yaml > prefect.yaml`: edit that file.
# Deploy to a process work pool (see docs/how-to/deploy.md):
#   prefect work-pool create {pool} --type process
#   prefect deploy --all
#   python -m interlink.deployments.automations    # the crashed-run and alert automations
#   prefect worker start --pool {pool}
"""



class _Dumper(yaml.SafeDumper):
    """PyYAML's own way with text, whatever else is loaded: importing Prefect's CLI (`prefect deploy`) changes it for
    the whole process."""


_Dumper.add_representer(str, yaml.representer.SafeRepresenter.represent_str)

def prefect_yaml(declared: Declarations) -> str:
    """The text of `prefect.yaml` for `declared`."""
    deployments = [
        {
            "name": d.name,
            "description": declared.description(d),
            "entrypoint": d.entrypoint,
            "schedules": [{"cron": d.cron, "timezone": declared.timezone}],
            "parameters": d.parameters,
            "tags": d.tags,
            "concurrency_limit": declared.limit(d),
            "work_pool": {"name": declared.work_pool, "job_variables": {"env": HEARTBEAT}},
        }
        for d in declared.deployments
    ]
    if declared.prune:  # the retention prune (deployments/prune.py)
        deployments.append({
            "name": prune.NAME,
            "description": prune.description(declared),
            "entrypoint": prune.ENTRYPOINT,
            "schedules": [{"cron": declared.prune, "timezone": declared.timezone}],
            "concurrency_limit": 1,
            "work_pool": {"name": declared.work_pool, "job_variables": {"env": HEARTBEAT}},
        })
    body = {"name": "interlink", "prefect-version": _prefect_version(), "deployments": deployments}
    return HEADER.format(pool=declared.work_pool) + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=120)


def _prefect_version() -> str:
    from prefect import __version__

    return __version__


if __name__ == "__main__":
    sys.stdout.write(prefect_yaml(declarations()))
