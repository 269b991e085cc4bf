"""Grading: parsing a completion into think and answer, verifying the answer against the reference
(math-verify behind r1v's own rules, in a process pool), the rule reward and the reward model,
judges, and the rewards GRPO and the exported trainers call."""
