"""The model cache: a resource's weights downloaded once into a PersistentVolumeClaim by a Job.

`layout` names things (pure, shared with the Deployment builder), `plan` builds the
claim and the Job and decides the ModelCached condition (pure), `reconciler` does the
I/O and `handlers` registers the kopf watches. See docs/model-cache.md.
"""
