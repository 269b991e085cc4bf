"""r1v_train: projector transfer, iterative SFT and GRPO on what r1v_data writes."""
