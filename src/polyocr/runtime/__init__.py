"""What this machine can run: the probed profile, attention/dtype choice and memory limits."""
