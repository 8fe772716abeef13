"""fedpriv on Flower: LoRA fine-tuning of the built-in model with secagg+ and user-level DP."""
