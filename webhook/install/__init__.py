"""Install-time tooling: development certificates, and registering the webhook with a cluster."""
