"""Networks, built by name + kwargs (what presets and bundles store) through :mod:`.builders`.

    builders.py      the registry: swinunetr (MONAI SwinUNETR), pctnet, unet-small; size rules per network
    pctnet.py        PCT-Net, MIS-FM's parallel convolution + transformer network, re-implemented
    swin_merging.py  SwinUNETR's 3-D token merge as the released VoCo / SwinUNETR weights were trained with it
    unet.py          a small CPU-friendly 3D UNet whose encoder is its own module
"""
