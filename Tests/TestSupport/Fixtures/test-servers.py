# Servers on 127.0.0.1 that stand in for the internet in the network VM tests: HTTP answering
# "hello", TLS (self-signed, made here with openssl) answering "HTTP/1.0 200 ok", and a Unix
# socket echo server (echoes until EOF, then shuts its side) for socket forwards. Prints
# "http=PORT tls=PORT unix=PATH" once all listen, then serves until stdin closes.
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
                sock.recv(1024)
                sock.sendall(b"HTTP/1.0 200 ok\r\n\r\nhello over tls\n")
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
key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=allowed.test",
                "-days", "1", "-keyout", key, "-out", cert], check=True, capture_output=True)
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
print(f"http={plain.server_address[1]} tls={secure.server_address[1]} unix={echo.server_address}", flush=True)
sys.stdin.read()
