"""A real Kubernetes control plane for tests, built from Kubernetes' own Go modules."""
