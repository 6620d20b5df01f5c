"""Loaded at start-up by child processes of the IAM conformance test (PYTHONPATH): records their AWS
calls (tests/support/iam_recorder.py). Inert without CDP_IAM_LOG."""

import os
import sys

if os.environ.get("CDP_IAM_LOG"):
    _root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    if _root not in sys.path:
        sys.path.append(_root)
    from tests.support import iam_recorder

    iam_recorder.install_from_env()
