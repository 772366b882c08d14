"""Suite-wide set-up: a bug must fail the test that meets it.

The CLI's last-resort handler turns an unexpected exception into one line and
status 70; DEEPX_SIM_DEBUG makes it re-raise instead, so no test can pass by
reaching it (tests/test_bad_input.py checks the handler itself).
"""

from __future__ import annotations

import os

os.environ["DEEPX_SIM_DEBUG"] = "1"
