"""Models: timm networks for a stage's output layout, their weights and saved form, and running
them over a loader."""
