"""Pretext tasks: VoCo (volume contrast) and Volume Fusion; sample generation on the device, labels, losses."""
