"""`imagefleet gateway`: one OpenAI-compatible front door for the fleet.

Pure policy (no I/O, unit-tested): `fleet` (the cache of resources and endpoints the
watches feed), `routing` (model group + quality -> the resources to try, in order),
`picking` (filters, scorers, picker over the pods), `holding` (bounded waits for a pod,
the demand signal's pace), `auth` (API keys). At the edges: `watch` (the API server),
`upstream` (HTTP to the pods, `load` polls), `service` (one request end to end), `app`
(FastAPI) and `command` (the CLI). Nothing here imports torch or the runtime.
"""
