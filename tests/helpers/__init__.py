"""What the tests share besides fixtures: data, models, stand-ins, fault injection (never tests)."""
