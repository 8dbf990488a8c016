"""imagefleet: a Kubernetes operator for GPU fleets serving image-generation models."""

GROUP = "imagefleet.io"
VERSION = "v1alpha1"
PLURAL = "imagemodeldeployments"
KIND = "ImageModelDeployment"
POOL_PLURAL = "imagemodelpools"
POOL_KIND = "ImageModelPool"
