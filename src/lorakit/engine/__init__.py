"""The one training engine: a short loop over a mode's loss, with optimizers, schedules and events kept apart."""
