"""The local development control plane: real Kubernetes components as local
processes, KWOK-simulated GPU nodes, and a local Prometheus."""
