"""A Flask service with no tracing code that calls the next hop.
Usage: [BIND=addr] [TLS_CERT=pem TLS_KEY=pem] chain_app.py PORT [DOWNSTREAM_BASE_URL]
With TLS_CERT and TLS_KEY it serves HTTPS (Python's ssl module, OpenSSL);
an https downstream is verified against REQUESTS_CA_BUNDLE."""
import sys

import requests
from flask import Flask

app = Flask(__name__)
DOWNSTREAM = sys.argv[2] if len(sys.argv) > 2 else None


@app.route("/hop/<n>")
def hop(n):
    if DOWNSTREAM is None:
        return f"leaf-{n}"
    answer = requests.get(f"{DOWNSTREAM}/{n}", timeout=10)
    return f"{n}>{answer.text}", answer.status_code


if __name__ == "__main__":
    import os
    tls = (os.environ["TLS_CERT"], os.environ["TLS_KEY"]) if "TLS_CERT" in os.environ else None
    app.run(host=os.environ.get("BIND", "127.0.0.1"), port=int(sys.argv[1]), threaded=True, ssl_context=tls)
