"""``ssl3d study``: does pretraining help on my data? Fine-tune every (init, labelled cases, seed) cell and
compare the inits on one held-out split, with intervals and paired tests (see :mod:`ssl3d.study.study`).

    plan.py -> cells.py -> pool.py      what runs (inits, cases, seeds, split), one cell, cells over devices
    results.py -> stats.py -> summary.py -> report.py   raw numbers, statistics, summary.csv, report.html
    study.py                            run_study: check, plan, pretrain what must be, run, analyse
    cancel_relay.py, commands.py        Cancel into the running cell; the command line
"""
