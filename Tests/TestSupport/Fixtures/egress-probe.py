# Runs inside the VM: connections the host proxy must judge. Prints one line per probe.
# Usage: egress-probe.py HTTP_PORT TLS_PORT FORWARD_PORT [UNIX_SOCKET UNIX_SOCKET_WITHOUT_HOST_SERVER]
import concurrent.futures
import socket
import ssl
import sys
import urllib.request

http_port, tls_port, forward_port = (int(a) for a in sys.argv[1:4])


def get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return f"{response.status} {response.read().decode()[:40]}"
    except urllib.error.HTTPError as error:
        return f"{error.code} " + error.read().decode().replace("\n", " / ")
    except Exception as error:  # refused, reset, timeout
        return f"failed {type(error).__name__}"


def tls(host, connect_to=None):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((connect_to or host, tls_port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as sock:
                sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}:{tls_port}\r\n\r\n".encode())
                return "ok " + sock.recv(200).decode(errors="replace").split("\r\n")[0]
    except Exception as error:
        return f"failed {type(error).__name__}"


print("allowed|" + get(f"http://allowed.test:{http_port}/"))
print("no-private|" + get(f"http://public.test:{http_port}/"))
print("denied|" + get(f"http://denied.test:{http_port}/"))
print("denied-port|" + get(f"http://allowed.test:{http_port + 1}/"))
print("both|" + get(f"http://both.test:{http_port}/"))
print("ip-literal|" + get("http://192.0.2.7/"))
print("tls-allowed|" + tls("allowed.test"))
print("tls-denied|" + tls("denied.test"))
print("tls-ip-with-allowed-sni|" + tls("allowed.test", connect_to="192.0.2.7"))
print("forward|" + get(f"http://127.0.0.1:{forward_port}/"))


def unix(path):
    # A Unix-socket forward to the host's echo server: send, half-close, read to its EOF.
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(b"ping over unix " * 1000)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return f"{len(data)} {data[:15].decode()}"
    except Exception as error:
        return f"failed {type(error).__name__} {error}"


if len(sys.argv) > 4:
    print("unix|" + unix(sys.argv[4]))
    print("unix-gone|" + unix(sys.argv[5]))


def one(i):
    body = get(f"http://allowed.test:{http_port}/", timeout=60)
    return body.startswith("200 hello")


with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
    results = list(pool.map(one, range(200)))
print(f"concurrent|{sum(results)}/200")
