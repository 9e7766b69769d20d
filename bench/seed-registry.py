#!/usr/bin/env python3
"""Pushes a synthetic image to a plain-HTTP registry through the Distribution API.

Layers are random bytes wrapped in gzip stored blocks (level 0): real gzip, so
that skopeo copies them as they are instead of compressing them, and no time
is spent compressing. Usage:

    seed-registry.py HOST REPO TAG ID:MIB [ID:MIB ...]

Each layer is ID:MIB: MIB mebibytes of random data seeded by ID, so two
images that name the same ID share that layer. Prints the manifest digest.
"""
import hashlib
import http.client
import json
import random
import sys
import zlib

CHUNK = 1 << 20


def layer_chunks(seed, mib):
    rng = random.Random(seed)
    z = zlib.compressobj(0, zlib.DEFLATED, 31)
    for _ in range(mib):
        out = z.compress(rng.randbytes(CHUNK))
        if out:
            yield out
    yield z.flush()


def push_blob(host, repo, chunks):
    conn = http.client.HTTPConnection(host)
    conn.request("POST", f"/v2/{repo}/blobs/uploads/")
    r = conn.getresponse()
    r.read()
    assert r.status == 202, r.status
    location = r.getheader("Location")
    path = location.split(host, 1)[-1] if "://" in location else location
    sha = hashlib.sha256()
    size = 0

    def body():
        nonlocal size
        for c in chunks:
            sha.update(c)
            size += len(c)
            yield c

    conn.request("PATCH", path, body=body(), encode_chunked=True,
                 headers={"Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    r.read()
    assert r.status == 202, r.status
    location = r.getheader("Location")
    path = location.split(host, 1)[-1] if "://" in location else location
    digest = "sha256:" + sha.hexdigest()
    sep = "&" if "?" in path else "?"
    conn.request("PUT", f"{path}{sep}digest={digest}", body=b"")
    r = conn.getresponse()
    r.read()
    assert r.status == 201, (r.status, digest)
    return digest, size


def main():
    host, repo, tag = sys.argv[1:4]
    descs = []
    for spec in sys.argv[4:]:
        layer_id, mib = (int(x) for x in spec.split(":"))
        digest, size = push_blob(host, repo, layer_chunks(layer_id, mib))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
        print(f"layer {layer_id}: {size} bytes {digest}", file=sys.stderr)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"tag": tag}},
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode()
    config_digest, _ = push_blob(host, repo, iter([config]))
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": descs,
    }, indent=2).encode()
    conn = http.client.HTTPConnection(host)
    conn.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status
    print("sha256:" + hashlib.sha256(manifest).hexdigest())


if __name__ == "__main__":
    main()
