"""The node agent of the local fleet: it plays the kubelet for runtime pods on simulated nodes.

For each runtime pod bound to a KWOK node it runs one `imagefleet-runtime` process at the
pod's loopback IP, probes it as the pod's probes say, writes the pod's status (IP, phase,
conditions, container state, restarts), drains it on deletion and then removes the pod.
`plan` holds the pure decisions, `processes` the process I/O, `agent` the watch and the
per-pod workers.
"""
