"""Differential privacy on LoRA adapters: sample-level DP-SGD, user-level DP-FedAvg, accounting."""
