"""Reference pages generated from the code: Helm values, environment variables, metrics, CLI.

Its own package, beside `imagefleet` and `imagefleet_runtime`, because it reads both (the operator
may not import the runtime). `python -m imagefleet_docs` rewrites the pages; tests/docs fails when
a checked-in page differs from what the code generates. The CRD's reference is
`imagefleet crd-reference` (imagefleet/crd/reference.py).
"""
