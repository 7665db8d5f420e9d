"""Models, front-ends, checkpoints, losses, metrics and data. Imported by index/ and service/."""
