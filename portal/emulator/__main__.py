"""python -m portal.emulator --host 127.0.0.1 --port 8765 [--state emulator.sqlite]"""

import argparse

from portal.emulator.server import serve


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m portal.emulator",
                                     description="Emulated Google OAuth token endpoint and Calendar API v3")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", default=None, help="SQLite file that keeps the state across restarts")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    parser.add_argument("--allow-http-webhooks", action="store_true",
                        help="deliver push notifications to plain http:// addresses too (Google requires https)")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.state, quiet=args.quiet, allow_http_webhooks=args.allow_http_webhooks)


if __name__ == "__main__":
    main()
