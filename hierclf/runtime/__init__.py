"""Where and how training runs: the device, the torch threads a process takes, and the processes
torchrun starts (read from its environment in one place, `launch`)."""
