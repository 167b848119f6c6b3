# Servers on 127.0.0.1 that stand in for the internet in the network VM tests: HTTP answering
# "hello"; TLS with a certificate for allowed.test, api.test, pass.test, api.anthropic.com and platform.claude.com (a stand-in token endpoint) from a made-up CA
# (made here with openssl; its file is said as ca=PATH, for AIRLOCK_TEST_ONLY_UPSTREAM_CA),
# answering HTTP requests with what it received (host, path, authorization; also appended to
# received.log beside the CA, as the host saw them) and echoing
# anything else; and a Unix socket echo server (echoes until EOF, then shuts its side) for
# socket forwards. Prints "http=PORT tls=PORT unix=PATH ca=PATH" once all listen, then serves
# until stdin closes.
import http.server
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TLSHello(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            with context.wrap_socket(self.request, server_side=True) as sock:
                data = sock.recv(65536)
                if data.split(b" ")[0] in (b"GET", b"POST", b"HEAD", b"PUT"):
                    while b"\r\n\r\n" not in data:
                        more = sock.recv(65536)
                        if not more:
                            break
                        data += more
                    lines = data.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
                    headers = {}
                    for line in lines[1:]:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                    if lines[0].startswith("GET /oauth/authorize?"):
                        sock.sendall(authorize_page(lines[0].split(" ")[1]))
                        return
                    if lines[0].startswith("POST /v1/oauth/token"):
                        body = data.split(b"\r\n\r\n", 1)[1]
                        while len(body) < int(headers.get("content-length", "0")):
                            body += sock.recv(65536)
                        sock.sendall(token_endpoint(lines[0].split(" ")[1], headers, body.decode(errors="replace")))
                        return
                    with open(os.path.join(directory, "received.log"), "a") as log:
                        log.write("%s %s %s\n" % (headers.get("host", ""), lines[0].split(" ")[1], headers.get("authorization", "")))
                    body = ("hello over tls\nhost=%s\npath=%s\nauthorization=%s\n" % (
                        headers.get("host", ""), lines[0].split(" ")[1], headers.get("authorization", ""))).encode()
                    sock.sendall(b"HTTP/1.1 200 ok\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                    return
                while data:
                    sock.sendall(b"echo " + data)
                    data = sock.recv(65536)
        except Exception:
            pass


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while True:
                data = self.request.recv(65536)
                if not data:
                    break
                self.request.sendall(data)
            self.request.shutdown(socket.SHUT_WR)
        except Exception:
            pass


directory = tempfile.mkdtemp()
# A stand-in for Anthropic's sign-in (platform.claude.com): its authorize page notes the PKCE
# challenge and sends the browser to the redirect with the code "real-code-1"; the token
# endpoint gives tokens for that code when the verifier's S256 is the challenge, and for each
# refresh; a revoke forgets them. Each request goes into received.log.
signed_in = {"n": 0, "challenge": None}


def authorize_page(target):
    import urllib.parse
    query = dict(urllib.parse.parse_qsl(target.split("?", 1)[1]))
    signed_in["challenge"] = query.get("code_challenge")
    location = "%s?code=real-code-1&state=%s" % (query.get("redirect_uri", ""), urllib.parse.quote(query.get("state", "")))
    return b"HTTP/1.1 302 found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % location.encode()


def pkce(verifier):
    import base64, hashlib
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def token_endpoint(path, headers, body):
    import json
    with open(os.path.join(directory, "received.log"), "a") as log:
        log.write("%s %s %s\n" % (headers.get("host", ""), path, body))
    request = json.loads(body or "{}")
    answer, status = {"error": "invalid_grant"}, "400 bad"
    if path == "/v1/oauth/token/revoke":
        answer, status = {}, "200 ok"
    elif (request.get("code") == "real-code-1" and pkce(request.get("code_verifier", "")) == signed_in["challenge"]) \
            or request.get("grant_type") == "refresh_token":
        signed_in["n"] += 1
        answer, status = {"access_token": "sk-ant-oat01-REALSIGNIN-access-%d-%s" % (signed_in["n"], "a" * 60),
                          "refresh_token": "sk-ant-ort01-REALSIGNIN-refresh-%d-%s" % (signed_in["n"], "r" * 60),
                          "expires_in": 3600, "scope": "user:inference", "account": {"email_address": "dev@example.com"}}, "200 ok"
    out = json.dumps(answer).encode()
    return b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status.encode(), len(out)) + out


ca_key, ca = os.path.join(directory, "ca-key.pem"), os.path.join(directory, "ca.pem")
key, request, cert = (os.path.join(directory, name) for name in ("key.pem", "request.pem", "cert.pem"))
names = os.path.join(directory, "names.cnf")
with open(names, "w") as file:
    file.write("subjectAltName=DNS:allowed.test,DNS:api.test,DNS:pass.test,DNS:api.anthropic.com,DNS:platform.claude.com\nbasicConstraints=CA:FALSE\n")
for command in (
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=airlock test upstream CA",
     "-days", "2", "-keyout", ca_key, "-out", ca],
    ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=api.test", "-keyout", key, "-out", request],
    ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1", "-extfile", names, "-out", cert],
):
    subprocess.run(["openssl"] + command, check=True, capture_output=True)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)

http.server.ThreadingHTTPServer.daemon_threads = True
plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
plain.request_queue_size = 256
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer.allow_reuse_address = True
secure = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TLSHello)
socketserver.ThreadingUnixStreamServer.daemon_threads = True
echo = socketserver.ThreadingUnixStreamServer(os.path.join(directory, "echo.sock"), Echo)
for server in (plain, secure, echo):
    threading.Thread(target=server.serve_forever, daemon=True).start()
print(f"http={plain.server_address[1]} tls={secure.server_address[1]} unix={echo.server_address} ca={ca}", flush=True)
sys.stdin.read()
