"""Inference: sliding-window segmentation, interactive (click) sessions, post-processing."""
