#!/usr/bin/env python3
"""Builds small OCI test images from a JSON description on stdin and pushes them to a
registry with the distribution API (monolithic blob uploads: POST, then PUT ?digest=).

Prints {"manifest": digest, "layers": [digests], "config": digest, "index": digest|null}.
Used by airlock's tests only; it writes hostile layers on purpose."""
import base64, gzip, hashlib, http.client, io, json, os, random, subprocess, sys, tarfile

spec = json.load(sys.stdin)
host = spec["registry"]
repo = spec["repository"]
auth = spec.get("auth")


def request(method, path, body=None, headers=None, expect=(200, 201, 202)):
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    connection = http.client.HTTPConnection(host, timeout=60)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.status not in expect:
        sys.exit(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
    return response, data


def push_blob(data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response, _ = request("HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404))
    if response.status == 200:
        return digest
    response, _ = request("POST", f"/v2/{repo}/blobs/uploads/")
    location = response.getheader("Location")
    if location.startswith("http"):
        location = "/" + location.split("/", 3)[3]
    separator = "&" if "?" in location else "?"
    request("PUT", f"{location}{separator}digest={digest}", body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    return digest


def payload(entry):
    if "src" in entry:
        with open(entry["src"], "rb") as source:
            return source.read()
    if "data" in entry:
        return entry["data"].encode()
    size = entry.get("size", 0)
    rng = random.Random(entry.get("seed", entry["path"]))
    if entry.get("compressible"):
        words = [bytes(rng.choice(b"abcdefghij") for _ in range(8)) for _ in range(64)]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words) + b" "
        return bytes(out[:size])
    return rng.randbytes(size)


def sparse_member(entry):
    """A PAX 1.0 GNU sparse file: a small data map claiming `realsize` bytes."""
    realsize = entry["realsize"]
    sparse_map = f"1\n{realsize - 512}\n512\n".encode().ljust(512, b"\0")
    data = sparse_map + b"x" * 512
    info = tarfile.TarInfo("GNUSparseFile.0/" + entry["path"].rsplit("/", 1)[-1])
    info.size = len(data)
    info.mode = 0o644
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": entry["path"], "GNU.sparse.realsize": str(realsize)}
    return info, data


def build_layer(layer):
    """The layer blob and its diff_id (the digest of the uncompressed tar)."""
    if "raw_b64" in layer:
        data = base64.b64decode(layer["raw_b64"])
        return data, "sha256:" + hashlib.sha256(data).hexdigest()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in layer["entries"]:
            kind = entry.get("type", "file")
            if kind == "sparse":
                info, data = sparse_member(entry)
                tar.addfile(info, io.BytesIO(data))
                continue
            info = tarfile.TarInfo(entry["path"])
            info.mode = entry.get("mode", 0o755 if kind == "dir" else 0o644)
            info.uid = entry.get("uid", 0)
            info.gid = entry.get("gid", 0)
            info.uname = info.gname = ""
            info.mtime = entry.get("mtime", 1700000000)
            if entry.get("xattrs"):
                info.pax_headers = {"SCHILY.xattr." + k: v for k, v in entry["xattrs"].items()}
            data = None
            if kind == "file":
                info.type = tarfile.REGTYPE
                data = payload(entry)
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry["target"]
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = entry["target"]
            elif kind in ("char", "block"):
                info.type = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
                info.devmajor = entry.get("major", 0)
                info.devminor = entry.get("minor", 0)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    compression = layer.get("compression", "gzip")
    if compression == "gzip":
        out = gzip.compress(raw, compresslevel=layer.get("level", 6), mtime=0)
    elif compression == "zstd":
        out = subprocess.run(["zstd", "-q", "-3", "-c"], input=raw, stdout=subprocess.PIPE, check=True).stdout
    else:
        out = raw
    if "truncate" in layer:
        out = out[: layer["truncate"]]
    return out, "sha256:" + hashlib.sha256(raw).hexdigest()


MEDIA = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
         "none": "application/vnd.oci.image.layer.v1.tar"}


def push_image(description, architecture):
    layers = []
    diff_ids = []
    for layer in description["layers"]:
        data, diff_id = build_layer(layer)
        digest = push_blob(data)
        diff_ids.append(diff_id)
        layers.append({"mediaType": MEDIA[layer.get("compression", "gzip")], "digest": digest, "size": len(data)})
    for index in description.get("lie_diff_ids", []):
        diff_ids[int(index)] = "sha256:" + hashlib.sha256(b"not this layer").hexdigest()
    config = {"architecture": architecture, "os": "linux", "config": description.get("config", {}),
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_bytes = json.dumps(config).encode()
    config_digest = push_blob(config_bytes)
    for index, delta in description.get("lie_sizes", {}).items():
        layers[int(index)]["size"] += delta
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config_bytes)},
                "layers": layers}
    manifest_bytes = json.dumps(manifest).encode()
    return manifest_bytes, [l["digest"] for l in layers], config_digest


def put_manifest(reference, body, media_type):
    request("PUT", f"/v2/{repo}/manifests/{reference}", body=body, headers={"Content-Type": media_type})
    return "sha256:" + hashlib.sha256(body).hexdigest()


manifest_bytes, layer_digests, config_digest = push_image(spec, spec.get("architecture", "amd64"))
result = {"layers": layer_digests, "config": config_digest, "index": None}
if spec.get("multiplatform"):
    other = {"layers": [{"entries": [{"path": "arm-only", "data": "wrong platform\n"}]}], "config": {}}
    other_bytes, _, _ = push_image(other, "arm64")
    amd = put_manifest("sha256:" + hashlib.sha256(manifest_bytes).hexdigest(), manifest_bytes, "application/vnd.oci.image.manifest.v1+json")
    arm = put_manifest("sha256:" + hashlib.sha256(other_bytes).hexdigest(), other_bytes, "application/vnd.oci.image.manifest.v1+json")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": len(other_bytes),
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": len(manifest_bytes),
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    index_bytes = json.dumps(index).encode()
    result["index"] = put_manifest(spec.get("tag", "latest"), index_bytes, "application/vnd.oci.image.index.v1+json")
    result["manifest"] = amd
else:
    result["manifest"] = put_manifest(spec.get("tag", "latest"), manifest_bytes, "application/vnd.oci.image.manifest.v1+json")
print(json.dumps(result))
