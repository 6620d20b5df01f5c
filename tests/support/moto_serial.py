"""moto's server, answering one request at a time (started by tests.support.aws.start_moto_server).

DynamoDB applies each conditional write atomically. moto's threaded server checks a condition and then
writes without a lock, so two concurrent conditional updates of one item can both succeed: seen as two
account claims of one account both accepted (tests/aws/test_state_store.py, about 1 run in 6 under
`-n 2`). The same race could hit any test that relies on a condition (leases, sticky conversations, the
reply versions). Serialising the requests gives DynamoDB's semantics; moto runs under the GIL anyway,
so little is lost. Connections are still accepted concurrently (threaded), only the app is serial.

    python tests/support/moto_serial.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, required=True)
    args = ap.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serial(environ, start_response):
        with lock:  # the whole request, its body read out too, before the next one starts
            return list(app(environ, start_response))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple(args.host, args.port, serial, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
