"""``ssl3d study``: does pretraining help on my data? Fine-tune every (init, labelled cases, seed) cell and
compare the inits on one held-out split, with intervals and paired tests (see :mod:`ssl3d.study.study`)."""
