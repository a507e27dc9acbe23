"""A small SMTP server for tests (aiosmtpd), run by callguard-mocks' SmtpSink.

Listens on 127.0.0.1:PORT, requires AUTH (PLAIN or LOGIN, allowed without TLS
since it is local) with USER/PASSWORD, and saves each message it accepts as
NNNN.json in DIR: {"mail_from", "rcpt_tos", "data", "login"}. Given ACCEPTED
and REFUSED, it flaps: of every ACCEPTED + REFUSED messages, it accepts the
first ACCEPTED and answers the rest "451" (try again later). Prints "ready"
once it listens; runs until killed.

    python3 smtp_sink.py PORT DIR USER PASSWORD [ACCEPTED REFUSED]
"""

import json
import logging
import os
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, directory, accepted, refused):
        self.directory = directory
        self.accepted = accepted
        self.cycle = accepted + refused
        self.seen = 0
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.cycle and (self.seen - 1) % self.cycle >= self.accepted:
            return "451 4.3.0 Try again later"
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "login": session.auth_data.login.decode() if session.auth_data else None,
        }
        path = os.path.join(self.directory, f"{self.count:04}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)  # readers never see half a file
        return "250 OK"


def main():
    # Local AUTH without TLS is the point here; aiosmtpd warns about it.
    warnings.filterwarnings("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    port, directory, user, password = sys.argv[1:5]
    accepted, refused = (int(n) for n in sys.argv[5:7]) if len(sys.argv) > 5 else (0, 0)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (user, password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    controller = Controller(
        Saver(directory, accepted, refused),
        hostname="127.0.0.1",
        port=int(port),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
