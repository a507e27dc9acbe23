"""A small SMTP server for the alerts email test (aiosmtpd).

Listens on 127.0.0.1:PORT, requires AUTH (PLAIN or LOGIN, allowed without TLS
since it is local) with USER/PASSWORD, and saves each message it accepts as
NNNN.json in DIR: {"mail_from", "rcpt_tos", "data", "login"}. Runs until killed.

    python3 smtp_sink.py PORT DIR USER PASSWORD
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
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
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

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (user, password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    controller = Controller(
        Saver(directory),
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
