"""What services import to ask the rollout gate: redis and the standard library only."""
