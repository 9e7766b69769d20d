#!/usr/bin/env python3
"""Writes an OCI image of a root file system directory as an oci-archive,
without a container engine: one layer (a reproducible tar.gz of ROOTFS), an
image config, an image manifest, and an image index over the one platform
built here (shaped for more: each platform is an entry of the index), in an
OCI image layout packed into one tar. Called by dist/image.sh.

    oci-image.py --rootfs DIR --out FILE --name REF --version V --revision R
                 --source URL --created RFC3339 [--arch amd64]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile


INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, blob, **more):
    """An OCI descriptor of `blob`, with `more` fields (platform, annotations)."""
    return {"mediaType": media_type, "digest": digest(blob), "size": len(blob), **more}


def compact(document):
    return json.dumps(document, separators=(",", ":")).encode()


def layer_tar(rootfs, mtime):
    """The root file system as a tar with fixed owners, modes and times."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(top, name)
                arcname = os.path.relpath(path, rootfs)
                info = tar.gettarinfo(path, arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                if info.isdir():
                    info.mode = 0o1777 if arcname == "tmp" else 0o755
                    tar.addfile(info)
                else:
                    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
    return out.getvalue()


def main():
    p = argparse.ArgumentParser()
    for flag in ("rootfs", "out", "name", "version", "revision", "source", "created"):
        p.add_argument("--" + flag, required=True)
    p.add_argument("--arch", default="amd64")
    a = p.parse_args()
    created = a.created
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

    tar = layer_tar(a.rootfs, mtime)
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    labels = {
        "org.opencontainers.image.title": "detour",
        "org.opencontainers.image.description": "Rewrites Pod images to registry mirrors",
        "org.opencontainers.image.version": a.version,
        "org.opencontainers.image.revision": a.revision,
        "org.opencontainers.image.source": a.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    config = json.dumps({
        "created": created,
        "architecture": a.arch,
        "os": "linux",
        "config": {
            "User": "65532:65532",
            "Entrypoint": ["/detour"],
            "Cmd": ["serve"],
            "Env": ["SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            # Writable for user 65532 (and a tmpfs under `podman run --read-only`):
            # `serve --dev` writes its throwaway certificates to ./certs.
            "WorkingDir": "/tmp",
            "ExposedPorts": {"8443/tcp": {}, "8080/tcp": {}, "5443/tcp": {}},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
        "history": [{"created": created, "created_by": "dist/image.sh: the static detour binary, CA certificates, user 65532"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = compact({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        "annotations": {k: v for k, v in labels.items() if k in ("org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source", "org.opencontainers.image.created")},
    })
    index = compact({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [descriptor(MANIFEST, manifest, platform={"os": "linux", "architecture": a.arch})],
        "annotations": {"org.opencontainers.image.version": a.version, "org.opencontainers.image.source": a.source},
    })
    layout_index = compact({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [descriptor(INDEX, index, annotations={"org.opencontainers.image.ref.name": a.name})],
    })

    members = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", layout_index)]
    for blob in (index, manifest, config, layer):
        members.append(("blobs/sha256/" + digest(blob)[7:], blob))
    partial = a.out + ".partial"
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = mtime
            out.addfile(info, io.BytesIO(data))
    os.replace(partial, a.out)
    print(digest(index))


if __name__ == "__main__":
    main()
