#!/usr/bin/env python3
"""A Debian-like image made from this host's own apt and dpkg, and a one-package archive
for it, so a test can run `sudo apt-get install` in a VM without anything from the internet.

    aptimage.py REPOSITORY_DIRECTORY ARCHIVE_URL

Builds the archive in REPOSITORY_DIRECTORY (a flat repository: airlock-hello_1.0_all.deb,
Packages, an unsigned Release) and prints the image's layer entries as JSON (testimage.py's
form): apt, dpkg and the programs dpkg wants, each with the shared libraries `ldd` names,
dpkg's configuration, empty package databases, and a sources.list naming only ARCHIVE_URL
(trusted: the Release is unsigned). Used by airlock's tests only."""
import hashlib, json, os, stat, subprocess, sys, time

repository, url = sys.argv[1], sys.argv[2]

PROGRAMS = [
    "/usr/bin/apt-get", "/usr/bin/apt-config", "/usr/bin/apt-cache", "/usr/bin/dpkg", "/usr/bin/dpkg-deb",
    "/usr/bin/dpkg-query", "/usr/bin/dpkg-split", "/usr/bin/dpkg-trigger", "/usr/bin/dash", "/usr/bin/rm",
    "/usr/bin/tar", "/usr/bin/diff", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/id", "/usr/bin/env",
    "/usr/sbin/ldconfig", "/usr/sbin/start-stop-daemon",
    "/usr/lib/apt/methods/http", "/usr/lib/apt/methods/file", "/usr/lib/apt/methods/copy",
    "/usr/lib/apt/methods/store", "/usr/lib/apt/methods/gpgv",
]
TREES = ["/etc/dpkg", "/usr/share/dpkg"]

entries = {}


def add_file(path):
    """`path` (absolute, on this host) in the image at the same place; links kept as links,
    their targets added too; directories on the way resolved (usr-merged: /lib is usr/lib)."""
    path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    key = path.lstrip("/")
    if key in entries:
        return
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        entries[key] = {"path": key, "type": "symlink", "target": target}
        add_file(os.path.join(os.path.dirname(path), target))
    elif stat.S_ISDIR(info.st_mode):
        entries[key] = {"path": key, "type": "dir", "mode": stat.S_IMODE(info.st_mode), "uid": 0, "gid": 0}
        for name in sorted(os.listdir(path)):
            add_file(os.path.join(path, name))
    elif stat.S_ISREG(info.st_mode):
        entries[key] = {"path": key, "src": path, "mode": stat.S_IMODE(info.st_mode), "uid": 0, "gid": 0}


def libraries(program):
    output = subprocess.run(["ldd", program], capture_output=True, text=True).stdout
    for line in output.splitlines():
        parts = line.split()
        if "=>" in parts and parts.index("=>") + 1 < len(parts) and parts[parts.index("=>") + 1].startswith("/"):
            yield parts[parts.index("=>") + 1]
        elif parts and parts[0].startswith("/"):
            yield parts[0]


for program in PROGRAMS:
    add_file(program)
    for library in libraries(program):
        add_file(library)
for tree in TREES:
    add_file(tree)

layer = list(entries.values())
for link, target in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
    layer.append({"path": link, "type": "symlink", "target": target})
layer.append({"path": "usr/bin/sh", "type": "symlink", "target": "dash"})
for directory in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/lib/apt/lists/partial",
                  "var/cache/apt/archives/partial", "var/log/apt", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
                  "etc/apt/sources.list.d", "etc/apt/trusted.gpg.d", "usr/local/bin", "tmp", "root", "home/dev"]:
    layer.append({"path": directory, "type": "dir", "mode": 0o1777 if directory == "tmp" else 0o755, "uid": 0, "gid": 0})
layer[-1] |= {"uid": 1000, "gid": 1000}
for path, text in [("var/lib/dpkg/status", ""), ("var/lib/dpkg/available", ""), ("etc/apt/sources.list", f"deb [trusted=yes] {url} ./\n"),
                   ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n_apt:x:42:65534::/nonexistent:/bin/sh\n"
                                  "dev:x:1000:1000:Dev:/home/dev:/bin/sh\n"),
                   ("etc/group", "root:x:0:\nnogroup:x:65534:\ndev:x:1000:\n")]:
    layer.append({"path": path, "data": text, "mode": 0o644, "uid": 0, "gid": 0})

# The archive: one package with one program.
package = os.path.join(repository, "build")
os.makedirs(os.path.join(package, "DEBIAN"), exist_ok=True)
os.makedirs(os.path.join(package, "usr/bin"), exist_ok=True)
control = ("Package: airlock-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: airlock tests <tests@airlock.invalid>\n"
           "Description: says hello from the test archive\n")
with open(os.path.join(package, "DEBIAN/control"), "w") as out:
    out.write(control)
program = os.path.join(package, "usr/bin/airlock-hello")
with open(program, "w") as out:
    out.write("#!/bin/sh\necho hello from the test archive\n")
os.chmod(program, 0o755)
deb = os.path.join(repository, "airlock-hello_1.0_all.deb")
subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", package, deb], check=True, capture_output=True)
data = open(deb, "rb").read()
packages = control + f"Filename: ./airlock-hello_1.0_all.deb\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n\n"
with open(os.path.join(repository, "Packages"), "w") as out:
    out.write(packages)
release = (f"Origin: airlock-tests\nLabel: airlock-tests\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\n"
           f"SHA256:\n {hashlib.sha256(packages.encode()).hexdigest()} {len(packages.encode())} Packages\n")
with open(os.path.join(repository, "Release"), "w") as out:
    out.write(release)

json.dump(layer, sys.stdout)
