"""``python -m cycler_da`` is ``cycler`` (e.g. under ``torchrun --nproc-per-node N -m cycler_da train ...``)."""

from cycler_da.cli import app

app(prog_name="cycler")
