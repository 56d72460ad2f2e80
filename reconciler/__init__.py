"""The reconciler sidecar: a level-triggered loop that provisions nodes and serving workloads."""
