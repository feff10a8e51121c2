"""CDK constructs: each models one logical unit and owns the grants to use it (stacks/ composes them)."""
