"""A stand-in replica for tests that need dozens of them: it answers a model server's probes
(``/ready``, ``/ping``, ``/health``) and ``/invocations`` on the unix socket the local runtime
gives it, without loading a model — it starts in a few hundredths of a second, where a real
model server takes a second or more of CPU each on this 2-core machine.

The local runtime starts ``<python> -m serving --model-dir D --unix-socket S --workers N``; a
test hands it a python that runs this file instead for the deployments it picks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

from serving.sockets import bind_unix


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.answer({"status": "ok", "standin": True})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer({"predictions": [0]})

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:  # a unix socket peer has no address
        return "platform"


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = bind_unix(path)
        self.server_address = path
        self.server_activate()

    def get_request(self):
        request, _ = self.socket.accept()
        return request, ("platform", 0)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m")
    parser.add_argument("--unix-socket", required=True)
    args, _ = parser.parse_known_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    Server(args.unix_socket).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
