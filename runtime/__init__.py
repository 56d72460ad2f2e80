"""What runs in the inference Pod: the transformers server and the vLLM launcher."""
