#!/usr/bin/env python3
"""A stand-in for the Docker Engine API on a Unix socket, for airlock's tests: GET /_ping,
GET /images/{name}/json and GET /images/{name}/get (a `docker save` archive, built here from a
JSON spec, or an archive file given in the spec). Used where hostile exports are needed (a real
daemon refuses to load them) and for the OCI layout Docker >= 25 writes.

usage: docker-api.py SPEC.json SOCKET

spec: {"name": "127.0.0.1:5000/x/y:1", "layout": "classic" | "oci",
       "layers": [{"entries": [...], "compression": "none" | "gzip"}],   (entries as testimage.py)
       "config": {...}, "wrong_diff_id": 0, "manifest_layers": ["../../etc/passwd"],
       "archive": "/path/to/docker-save.tar", "id": "sha256:..."}"""
import gzip, hashlib, http.server, io, json, os, socketserver, sys, tarfile

spec = json.load(open(sys.argv[1]))
socket_path = sys.argv[2]


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_layer(layer):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in layer["entries"]:
            kind = entry.get("type", "file")
            info = tarfile.TarInfo(entry["path"])
            info.mode = entry.get("mode", 0o755 if kind == "dir" else 0o644)
            info.uid, info.gid = entry.get("uid", 0), entry.get("gid", 0)
            info.mtime = 1700000000
            data = None
            if kind == "file":
                data = entry.get("data", "").encode()
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry["target"]
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    blob = gzip.compress(raw, mtime=0) if layer.get("compression") == "gzip" else raw
    return blob, sha(raw)


def build_archive():
    blobs, diff_ids = [], []
    for layer in spec["layers"]:
        blob, diff_id = build_layer(layer)
        blobs.append(blob)
        diff_ids.append(diff_id)
    if "wrong_diff_id" in spec:
        diff_ids[spec["wrong_diff_id"]] = sha(b"something else")
    config = {"architecture": "amd64", "os": "linux", "config": spec.get("config", {}),
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_bytes = json.dumps(config).encode()
    files = {}
    if spec.get("layout", "classic") == "classic":
        config_name = sha(config_bytes)[7:] + ".json"
        layer_names = []
        for index, blob in enumerate(blobs):
            name = f"{index:064x}/layer.tar"
            files[name] = blob
            layer_names.append(name)
    else:
        config_name = "blobs/sha256/" + sha(config_bytes)[7:]
        layer_names = ["blobs/sha256/" + sha(blob)[7:] for blob in blobs]
        for name, blob in zip(layer_names, blobs):
            files[name] = blob
        media = lambda blob: "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if blob[:2] == b"\x1f\x8b" else "")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config_bytes), "size": len(config_bytes)},
                               "layers": [{"mediaType": media(b), "digest": sha(b), "size": len(b)} for b in blobs]}).encode()
        files["blobs/sha256/" + sha(manifest)[7:]] = manifest
        files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest), "size": len(manifest),
             "annotations": {"io.containerd.image.name": spec["name"]}}]}).encode()
        files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    files[config_name] = config_bytes
    files["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [spec["name"]],
                                          "Layers": spec.get("manifest_layers", layer_names)}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), sha(config_bytes)


if "archive" in spec:
    archive, image_id = open(spec["archive"], "rb").read(), spec["id"]
else:
    archive, image_id = build_archive()
inspect = json.dumps({"Id": image_id, "RepoTags": [spec["name"]], "RepoDigests": [], "Os": "linux",
                      "Architecture": "amd64", "Size": len(archive)}).encode()
names = {spec["name"], image_id}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"

    def reply(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/_ping":
            return self.reply(200, b"OK", "text/plain")
        for suffix, body, kind in (("/json", inspect, "application/json"), ("/get", archive, "application/x-tar")):
            if path.startswith("/images/") and path.endswith(suffix):
                if path[len("/images/"):-len(suffix)] in names:
                    return self.reply(200, body, kind)
                return self.reply(404, json.dumps({"message": "No such image: " + path}).encode())
        self.reply(404, b'{"message": "page not found"}')


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if os.path.exists(socket_path):
    os.unlink(socket_path)
Server(socket_path, Handler).serve_forever()
