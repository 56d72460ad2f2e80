"""CA and serving certificates for the webhook, their Secret, caBundle injection and rotation."""
