#!/usr/bin/env python3
"""Stand-in for Mailpit: an SMTP server on port 1025 that accepts any mail
(no authentication, no TLS: aiosmtpd), and on port 8025 the part of Mailpit's
HTTP API that reads what arrived, in Mailpit's JSON shapes:

  GET    /api/v1/messages[?start=N&limit=N]   summaries, newest first
  GET    /api/v1/message/ID                   one message, with its Text body
  DELETE /api/v1/messages                     forget every message
  GET    /livez, /readyz                      200 once both servers listen
  GET    /                                    a plain-text list

Mail is kept in memory only.
"""

import datetime
import email
import email.policy
import email.utils
import json
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from aiosmtpd.controller import Controller

SMTP_PORT = 1025
HTTP_PORT = 8025

messages = []  # oldest first
lock = threading.Lock()


def addresses(message, header):
    return [
        {"Name": name, "Address": address}
        for name, address in email.utils.getaddresses(message.get_all(header, []))
    ]


def text_body(message):
    body = message.get_body(preferencelist=("plain",))
    return body.get_content() if body is not None else ""


class Smtp:
    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = text_body(message)
        senders = addresses(message, "From")
        visible = {a["Address"] for header in ("To", "Cc") for a in addresses(message, header)}
        summary = {
            "ID": uuid.uuid4().hex,
            "MessageID": (message.get("Message-ID") or "").strip("<>"),
            "Read": False,
            "From": senders[0] if senders else {"Name": "", "Address": envelope.mail_from},
            "To": addresses(message, "To"),
            "Cc": addresses(message, "Cc"),
            "Bcc": [{"Name": "", "Address": rcpt} for rcpt in envelope.rcpt_tos if rcpt not in visible],
            "ReplyTo": addresses(message, "Reply-To"),
            "Subject": str(message.get("Subject", "")),
            "Created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "Tags": [],
            "Size": len(raw),
            "Attachments": 0,
            "Snippet": " ".join(text.split())[:250],
        }
        with lock:
            messages.append((summary, text))
        print(f"received: {summary['Subject']!r} for {', '.join(envelope.rcpt_tos)}", flush=True)
        return "250 Message accepted for delivery"


class Api(BaseHTTPRequestHandler):
    def answer(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        with lock:
            listed = list(reversed(messages))
        if url.path in ("/livez", "/readyz"):
            self.answer(200, "ok", "text/plain")
        elif url.path == "/api/v1/messages":
            query = parse_qs(url.query)
            start = int(query.get("start", ["0"])[0])
            limit = int(query.get("limit", ["50"])[0])
            page = [summary for summary, _ in listed[start : start + limit]]
            self.answer(
                200,
                {
                    "total": len(listed),
                    "unread": len(listed),
                    "count": len(page),
                    "messages_count": len(listed),
                    "start": start,
                    "tags": [],
                    "messages": page,
                },
            )
        elif url.path.startswith("/api/v1/message/"):
            wanted = url.path.rsplit("/", 1)[1]
            found = [(s, t) for s, t in listed if s["ID"] == wanted]
            if not found:
                self.answer(404, "message not found", "text/plain")
                return
            summary, text = found[0]
            self.answer(200, {**summary, "Text": text, "HTML": "", "Date": summary["Created"]})
        elif url.path == "/":
            lines = [f"{s['Created']}  {s['Subject']}" for s, _ in listed]
            self.answer(200, f"{len(lines)} messages\n" + "".join(l + "\n" for l in lines), "text/plain")
        else:
            self.answer(404, "not found", "text/plain")

    def do_DELETE(self):
        if urlparse(self.path).path != "/api/v1/messages":
            self.answer(404, "not found", "text/plain")
            return
        with lock:
            messages.clear()
        self.answer(200, "ok", "text/plain")

    def log_message(self, format, *args):
        pass


def main():
    # PID 1 of its container: stop at `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    smtp = Controller(Smtp(), hostname="0.0.0.0", port=SMTP_PORT)
    smtp.start()
    http = ThreadingHTTPServer(("0.0.0.0", HTTP_PORT), Api)
    print(f"mailpit stand-in: SMTP on :{SMTP_PORT}, HTTP API on :{HTTP_PORT}", flush=True)
    try:
        http.serve_forever()
    finally:
        smtp.stop()


if __name__ == "__main__":
    sys.exit(main())
