"""Network builders: SwinUNETR (MONAI), PCT-Net, a small CPU-friendly UNet; heads."""
