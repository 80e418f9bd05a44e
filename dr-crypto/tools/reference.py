#!/usr/bin/env python3
"""An independent implementation of dr-aead-v1, written from FORMAT.md alone.

It exists to check that FORMAT.md is complete and that dr follows it:

    python3 reference.py vector                      # print the known-answer vector
    python3 reference.py decrypt KEYFILE INFO STREAM # decrypt a dr stream to stdout

INFO is a JSON file holding the stream's EncryptionInfo from the manifest. Needs the
`cryptography` package (pip install cryptography).
"""
import base64
import hashlib
import hmac
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAGIC = b"DRAEAD\x00\x01"
CIPHERS = {1: ("aes-256-gcm", AESGCM), 2: ("chacha20-poly1305", ChaCha20Poly1305)}
HEADER = 45
TAG = 16


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def key_id(master):
    return hmac.new(master, b"dr key id v1", hashlib.sha256).digest()[:8].hex()


def wrap_aad(kid, cipher_name):
    return b"dr-aead-v1 wrap " + kid.encode() + cipher_name.encode()


def kek(master):
    return AESGCM(hkdf(master, b"", b"dr-aead-v1 wrap"))


def wrap(master, data_key, cipher_name, nonce):
    kid = key_id(master)
    sealed = kek(master).encrypt(nonce, data_key, wrap_aad(kid, cipher_name))
    return {"key_id": kid, "method": "aes-256-gcm-kw",
            "body": base64.b64encode(nonce + sealed).decode()}


def unwrap(master, wrapped, cipher_name):
    body = base64.b64decode(wrapped["body"], validate=True)
    assert wrapped["method"] == "aes-256-gcm-kw" and len(body) == 60
    return kek(master).decrypt(body[:12], body[12:], wrap_aad(wrapped["key_id"], cipher_name))


def x25519_public(secret):
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)


def x25519_key_id(public):
    return hashlib.sha256(b"dr x25519 key id v1" + public).digest()[:8].hex()


def x25519_recipient(public):
    return "dr-x25519-v1-" + base64.urlsafe_b64encode(public).decode().rstrip("=")


def x25519_kek(shared, eph_public, recipient):
    return AESGCM(hkdf(shared, eph_public + recipient, b"dr-aead-v1 x25519 wrap"))


def x25519_wrap(recipient, data_key, cipher_name, eph_secret):
    eph = X25519PrivateKey.from_private_bytes(eph_secret)
    eph_public = x25519_public(eph_secret)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    kid = x25519_key_id(recipient)
    sealed = x25519_kek(shared, eph_public, recipient).encrypt(
        bytes(12), data_key, wrap_aad(kid, cipher_name))
    return {"key_id": kid, "method": "x25519-hkdf-aes-256-gcm",
            "body": base64.b64encode(eph_public + sealed).decode()}


def x25519_unwrap(secret, wrapped, cipher_name):
    body = base64.b64decode(wrapped["body"], validate=True)
    assert wrapped["method"] == "x25519-hkdf-aes-256-gcm" and len(body) == 80
    recipient = x25519_public(secret)
    shared = X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(body[:32]))
    return x25519_kek(shared, body[:32], recipient).decrypt(
        bytes(12), body[32:], wrap_aad(wrapped["key_id"], cipher_name))


def nonce(i, last):
    return i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt(data_key, cipher_id, chunk_size, salt, plaintext):
    header = MAGIC + bytes([cipher_id]) + struct.pack(">I", chunk_size) + salt
    aead = CIPHERS[cipher_id][1](hkdf(data_key, salt, b"dr-aead-v1 payload" + header))
    chunks = [plaintext[i:i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]
    out = [header]
    for i, chunk in enumerate(chunks):
        out.append(aead.encrypt(nonce(i, i == len(chunks) - 1), chunk, b""))
    return b"".join(out)


def decrypt(data_key, expected_cipher, stream):
    header = stream[:HEADER]
    if len(header) < HEADER or header[:8] != MAGIC:
        raise ValueError("bad header")
    name, cls = CIPHERS[header[8]]
    if name != expected_cipher:
        raise ValueError("cipher differs from manifest")
    (size,) = struct.unpack(">I", header[9:13])
    if not 1024 <= size <= 16 << 20:
        raise ValueError("chunk size out of range")
    aead = cls(hkdf(data_key, header[13:45], b"dr-aead-v1 payload" + header))
    rest, i, out = stream[HEADER:], 0, []
    while len(rest) > size + TAG:
        out.append(aead.decrypt(nonce(i, False), rest[:size + TAG], b""))
        rest, i = rest[size + TAG:], i + 1
    if len(rest) < TAG or (len(rest) == TAG and i > 0):
        raise ValueError("truncated")
    out.append(aead.decrypt(nonce(i, True), rest, b""))
    return b"".join(out)


def read_key_file(path):
    """Returns ("key-file", master key) or ("x25519", secret)."""
    for line in open(path, encoding="utf-8").read().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            for prefix, kind in (("DR-KEY-V1-", "key-file"), ("DR-X25519-SECRET-V1-", "x25519")):
                if line.startswith(prefix):
                    raw = base64.urlsafe_b64decode(line[len(prefix):] + "=")
                    assert len(raw) == 32
                    return kind, raw
            raise ValueError("unknown key line")
    raise ValueError("no key line")


def vector():
    master = bytes(range(0, 32))
    data_key = bytes(range(32, 64))
    salt = bytes(range(64, 96))
    wrap_nonce = bytes(range(96, 108))
    plaintext = bytes(i % 251 for i in range(2100))
    print("key_id", key_id(master))
    for cipher_id, (name, _) in CIPHERS.items():
        stored = encrypt(data_key, cipher_id, 1024, salt, plaintext)
        assert decrypt(data_key, name, stored) == plaintext
        empty = encrypt(data_key, cipher_id, 1024, salt, b"")
        print(name, "wrapped", wrap(master, data_key, name, wrap_nonce)["body"])
        print(name, "stored_len", len(stored))
        print(name, "stored_sha256", hashlib.sha256(stored).hexdigest())
        print(name, "stored_tail", stored[-32:].hex())
        print(name, "empty_stream", empty.hex())
    identity = bytes(range(0x70, 0x90))
    ephemeral = bytes(range(0x90, 0xB0))
    recipient = x25519_public(identity)
    print("x25519 recipient", x25519_recipient(recipient))
    print("x25519 key_id", x25519_key_id(recipient))
    wrapped = x25519_wrap(recipient, data_key, "aes-256-gcm", ephemeral)
    assert x25519_unwrap(identity, wrapped, "aes-256-gcm") == data_key
    print("x25519 wrapped aes-256-gcm", wrapped["body"])


def main(argv):
    if argv[1:] == ["vector"]:
        vector()
    elif len(argv) == 5 and argv[1] == "decrypt":
        kind, secret = read_key_file(argv[2])
        info = json.load(open(argv[3]))
        assert info["scheme"] == "dr-aead-v1"
        if kind == "key-file":
            wrapped = next(w for w in info["wrapped_keys"] if w["key_id"] == key_id(secret))
            data_key = unwrap(secret, wrapped, info["cipher"])
        else:
            kid = x25519_key_id(x25519_public(secret))
            wrapped = next(w for w in info["wrapped_keys"] if w["key_id"] == kid)
            data_key = x25519_unwrap(secret, wrapped, info["cipher"])
        sys.stdout.buffer.write(decrypt(data_key, info["cipher"], open(argv[4], "rb").read()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
