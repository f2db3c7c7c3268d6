"""``python -m vitlens.cli`` (what ``torchrun ... -m vitlens.cli pretrain`` runs)."""
import sys

from . import main

sys.exit(main())
