"""Training: the configuration and recipes, the schedule, the Gluon loop, the Module loop, checkpoints and
optimizer state, run folders, reporting and plots, and distributed jobs."""
