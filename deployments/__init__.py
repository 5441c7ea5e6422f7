"""Deployments: every scheduled integration run, and each integration's owner, SLA and retention, declared once in
`deployments.yaml`.

- `declaration`: the file, read without Prefect (for the read-only commands);
- `runner`: the deployments as Prefect's runner serves them (`interlink serve`);
- `prefect_yaml`: the same for `prefect deploy` to a work pool;
- `automations`: the server-side automations: crashed runs, alerts, SLA breaches.
"""
