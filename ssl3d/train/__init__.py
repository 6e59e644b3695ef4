"""One training loop for every job: named phases, hooks for the methods, checkpoints, events, DDP.

    loop.py          the loop and the Task hooks (the pretext tasks, segmentation and interactive plug in)
    segmentation.py  supervised fine-tuning (patches from the cache, flips, sliding-window validation)
    interactive.py   click-to-segment training with simulated clicks
    init.py          a fine-tuning network started from a pretext bundle, with a load report
    checkpoint.py, optim.py, distributed.py, logger.py, run_lock.py   what the loop is made of
    commands.py      the shared plumbing of the training commands and ``ssl3d finetune``
"""
