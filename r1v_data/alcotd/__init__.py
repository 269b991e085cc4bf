"""AL-CoTD (adaptive-length CoT distillation): the QDAM/VTIA estimators, image clarity, and DRLC,
which turns a sample's normalised scores into its repetition penalty and token budget."""
