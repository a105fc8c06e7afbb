"""Jobs across the network: assignment, the worker, progress and results."""
