"""Measures of maps: how faithful a method's maps are to the model (deletion, insertion, ROAD), whether they depend on
what the model learnt (randomisation), how closely two models' maps agree, the paired statistics behind the
report's verdicts, and `scores`, which computes all of them for several models on a batch of images.

Each measure comes in two steps, so that a whole split can be scored in chunks on many processes: a per-image part,
whose results for chunks of images concatenate, and an aggregate over them."""
