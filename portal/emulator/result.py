"""What a handler of the emulator answers (the API, the control API, the UI pages): a status, headers and
a body, which `EmulatorApp` turns into the HTTP response."""

from __future__ import annotations

import json

JSON = "application/json; charset=UTF-8"


class Result:
    def __init__(self, status, body=None, headers=None, raw=None, content_type=JSON):
        self.status = status
        self.headers = list(headers or [])
        if raw is not None:
            self.data = raw
        elif body is None:
            self.data = b""
        else:
            self.data = json.dumps(body).encode()
        if status != 204 and not any(h[0].lower() == "content-type" for h in self.headers):
            self.headers.append(("Content-Type", content_type))
