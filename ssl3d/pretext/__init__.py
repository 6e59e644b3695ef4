"""Pretext tasks: VoCo (volume contrast) and Volume Fusion; sample generation on the device, labels, losses.

Each method is three layers whose imports point one way (the task trains the network and writes the
bundle; loading and scoring a bundle never needs the training loop)::

    pure functions      voco.py (labels, heads, losses), voco_samples.py (crops)
                        volume_fusion.py (fusion, crops, intensity), vf_loss.py, vf_samples.py (batches, metrics)
      <- bundle/model   voco_bundle.py (networks, bundle, scorer), vf_bundle.py (bundle, VFModel, accuracy)
      <- task           voco_task.py, vf_task.py: the hooks of the one training loop (ssl3d.train.loop)

``commands.py`` is ``ssl3d pretrain``; released weights come in through :mod:`ssl3d.weights`.
"""
