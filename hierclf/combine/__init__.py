"""Combiners: from every stage's probabilities to final labels, on the hierarchy's product terms
(`base`; `product`, `routed`, `stacking`, `blend`; by name in `registry`), and temperature
scaling (`temperature`)."""
