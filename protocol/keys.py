"""Signing keys, verify keys, and their COSE_Key form on disk.

Keys
----
Every fleet key is Ed25519 (RFC 8032 §5.1), used through COSE algorithm EdDSA, alg -8
(RFC 9053 §2.2). A key is named by its ``kid``: the content id of the raw 32-byte public key,
``ContentId.of(x).raw`` (34 bytes, see :mod:`.ids`), so anyone holding the public key can
compute its name and nobody can pick one. :class:`SigningKey` holds the private half and is
made from a 32-byte seed that the caller supplies (the runtime passes ``os.urandom``): this
module reads no randomness of its own. :class:`VerifyKey` holds a public key; it also accepts
Ed448 (RFC 8032 §5.2) so that Ed448 COSE examples can be verified, but the fleet signs with
Ed25519 only.

COSE_Key encoding (RFC 9052 §7, RFC 9053 §7.2)
-----------------------------------------------
A key is one COSE_Key map in core deterministic CBOR (RFC 8949 §4.2.1, keys sorted bytewise,
so the positive labels come before the negative ones)::

    {
      1: 1,          ; kty: OKP (RFC 9053 §7.2)
      2: h'1220…',   ; kid: the content id of x (34 bytes)
      3: -8,         ; alg: EdDSA (RFC 9053 §2.2)
     -1: 6,          ; crv: Ed25519 (RFC 9053 §7.1; Ed448 is 7, public keys only)
     -2: h'…',       ; x: the public key (32 bytes)
     -4: h'…',       ; d: the private key seed (32 bytes), private keys only
    }

On disk
-------
One key per file, the file holding exactly the COSE_Key bytes above (binary CBOR, no
framing, no text armour). Private and public halves are separate files: by convention
``<name>.key`` holds the private COSE_Key (with ``d``, written by the runtime with mode 0600)
and ``<name>.pub`` the public one (without ``d``). :meth:`VerifyKey.from_cose_key` refuses a
map that carries ``d``, so a private key is never loaded where a public one was meant (and
cannot be handed out by mistake as one). This module only turns bytes into keys and back;
reading and writing files is the runtime's job.

Decoding treats the bytes as hostile: bounded size and shape, deterministic encoding only,
every label known, every value checked (``kid`` must match ``x``; ``x`` must match ``d``).
Unknown labels are refused rather than ignored: a key file is small and local, and a
parameter we do not understand (say, a restriction) must not be silently dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import cbor
from .errors import DecodeError, LocalProtocolError, RemoteProtocolError, SignatureInvalid
from .ids import ContentId

__all__ = [
    "ALG_EDDSA",
    "KID_SIZE",
    "Curve",
    "KeyFormatError",
    "SigningKey",
    "VerifyKey",
    "kid_of",
]

#: COSE algorithm identifier of EdDSA (RFC 9053 §2.2).
ALG_EDDSA: Final = -8
#: Size of a kid: a SHA-256 content id (see :mod:`.ids`).
KID_SIZE: Final = 34

# COSE_Key labels: common parameters (RFC 9052 §7.1) and OKP parameters (RFC 9053 §7.2).
_KTY: Final = 1
_KID: Final = 2
_ALG: Final = 3
_KEY_OPS: Final = 4
_CRV: Final = -1
_X: Final = -2
_D: Final = -4
_KTY_OKP: Final = 1
_OP_SIGN: Final = 1  # key_ops values, RFC 9052 §7.1
_OP_VERIFY: Final = 2
_KNOWN_LABELS: Final = frozenset({_KTY, _KID, _ALG, _KEY_OPS, _CRV, _X, _D})

#: A COSE_Key is a handful of small items; anything bigger is not one.
_KEY_LIMITS: Final = cbor.Limits(
    max_size=512,
    max_depth=3,
    max_container_items=16,
    max_total_items=64,
    max_string_length=128,
    allowed_tags=frozenset(),
)


class Curve(enum.IntEnum):
    """COSE elliptic curve identifiers for OKP keys (RFC 9053 §7.1)."""

    ED25519 = 6
    ED448 = 7


_PUBLIC_SIZE: Final = {Curve.ED25519: 32, Curve.ED448: 57}
_SIGNATURE_SIZE: Final = {Curve.ED25519: 64, Curve.ED448: 114}
_SEED_SIZE: Final = 32


class KeyFormatError(RemoteProtocolError):
    """Bytes that are not an acceptable key or COSE_Key; the message names the rule."""

    code = "key-invalid"


def kid_of(public_raw: bytes) -> bytes:
    """The kid of a raw public key: its content id (34 bytes)."""
    return ContentId.of(public_raw).raw


class VerifyKey:
    """A public key that checks signatures; named by :attr:`kid`.

    Equal when curve and public bytes are equal; hashable, so usable as a dict key.
    """

    __slots__ = ("_key", "curve", "kid", "raw")

    _key: Ed25519PublicKey | Ed448PublicKey
    curve: Curve
    kid: bytes
    raw: bytes

    def __init__(self, raw: bytes, curve: Curve = Curve.ED25519) -> None:
        raw = bytes(raw)
        curve = Curve(curve)
        size = _PUBLIC_SIZE[curve]
        if len(raw) != size:
            raise KeyFormatError(f"{curve.name} public key must be {size} bytes, got {len(raw)}")
        try:
            if curve is Curve.ED25519:
                self._key = Ed25519PublicKey.from_public_bytes(raw)
            else:
                self._key = Ed448PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise KeyFormatError(f"not an {curve.name} public key: {exc}") from None
        self.curve = curve
        self.raw = raw
        self.kid = kid_of(raw)

    @property
    def signature_size(self) -> int:
        """Bytes in a signature made with this curve (64 for Ed25519, 114 for Ed448)."""
        return _SIGNATURE_SIZE[self.curve]

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check ``signature`` over ``data``; raise :class:`SignatureInvalid` if it fails."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            raise SignatureInvalid(
                f"signature does not verify under key {self.kid.hex()}"
            ) from None

    def to_cose_key(self) -> bytes:
        """This key as a public COSE_Key (module docstring), deterministic CBOR."""
        return cbor.encode(
            {_KTY: _KTY_OKP, _KID: self.kid, _ALG: ALG_EDDSA, _CRV: int(self.curve), _X: self.raw}
        )

    @classmethod
    def from_cose_key(cls, data: bytes) -> VerifyKey:
        """Decode a public COSE_Key; refuse private keys and anything malformed."""
        fields = _decode_cose_key(data)
        if _D in fields:
            raise KeyFormatError("public COSE_Key carries a private part (d, label -4)")
        if _X not in fields:
            raise KeyFormatError("public COSE_Key lacks x (label -2)")
        _check_key_ops(fields, _OP_VERIFY)
        key = cls(fields[_X], fields[_CRV])
        _check_kid(fields, key.kid)
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VerifyKey):
            return NotImplemented
        return self.curve == other.curve and self.raw == other.raw

    def __hash__(self) -> int:
        return hash((self.curve, self.raw))

    def __repr__(self) -> str:
        return f"VerifyKey({self.curve.name}, kid={self.kid.hex()})"


class SigningKey:
    """An Ed25519 private key: :attr:`sign`, its :attr:`public` half and its :attr:`kid`."""

    __slots__ = ("_key", "kid", "public", "seed", "sign")

    _key: Ed25519PrivateKey
    kid: bytes
    public: VerifyKey
    seed: bytes
    #: Ed25519 signature (64 bytes) over ``data`` (RFC 8032 §5.1.6; deterministic). The
    #: library's own bound method: a wrapper would cost a Python frame on every signature.
    sign: Callable[[bytes], bytes]

    def __init__(self, seed: bytes) -> None:
        seed = bytes(seed)
        if len(seed) != _SEED_SIZE:
            raise KeyFormatError(f"Ed25519 seed must be {_SEED_SIZE} bytes, got {len(seed)}")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.seed = seed
        self.public = VerifyKey(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        self.kid = self.public.kid
        self.sign = self._key.sign

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key whose RFC 8032 §5.1.5 secret is ``seed`` (32 bytes)."""
        return cls(seed)

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes]) -> SigningKey:
        """A new key from ``randbytes(32)``; pass a CSPRNG such as ``os.urandom``."""
        seed = randbytes(_SEED_SIZE)
        if not isinstance(seed, bytes) or len(seed) != _SEED_SIZE:
            raise LocalProtocolError("randbytes(32) must return 32 bytes")
        return cls(seed)

    def to_cose_key(self) -> bytes:
        """This key as a private COSE_Key (module docstring), deterministic CBOR."""
        return cbor.encode(
            {
                _KTY: _KTY_OKP,
                _KID: self.kid,
                _ALG: ALG_EDDSA,
                _CRV: int(Curve.ED25519),
                _X: self.public.raw,
                _D: self.seed,
            }
        )

    @classmethod
    def from_cose_key(cls, data: bytes) -> SigningKey:
        """Decode a private COSE_Key; check that ``x`` and ``kid``, if given, match ``d``."""
        fields = _decode_cose_key(data)
        if fields[_CRV] is not Curve.ED25519:
            raise KeyFormatError(f"private keys must be Ed25519, not {fields[_CRV].name}")
        if _D not in fields:
            raise KeyFormatError("private COSE_Key lacks d (label -4)")
        _check_key_ops(fields, _OP_SIGN)
        key = cls(fields[_D])
        if _X in fields and fields[_X] != key.public.raw:
            raise KeyFormatError("x (label -2) is not the public key of d (label -4)")
        _check_kid(fields, key.kid)
        return key

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid.hex()})"  # never the seed


def _decode_cose_key(data: bytes) -> dict[int, Any]:
    """Decode and check the shape of a COSE_Key map; values of known labels are typed."""
    try:
        value = cbor.decode(data, _KEY_LIMITS)
    except DecodeError as exc:
        raise KeyFormatError(f"COSE_Key is not acceptable CBOR: {exc.message}") from None
    if not isinstance(value, dict):
        raise KeyFormatError("COSE_Key must be a CBOR map (RFC 9052 §7)")
    for label in value:
        if type(label) is not int or label not in _KNOWN_LABELS:
            raise KeyFormatError(f"COSE_Key label {label!r} is not one this implementation knows")
    if value.get(_KTY) != _KTY_OKP or type(value.get(_KTY)) is not int:
        raise KeyFormatError("COSE_Key kty (label 1) must be 1, OKP (RFC 9053 §7.2)")
    if _ALG in value and (type(value[_ALG]) is not int or value[_ALG] != ALG_EDDSA):
        raise KeyFormatError("COSE_Key alg (label 3) must be -8, EdDSA (RFC 9053 §2.2)")
    crv = value.get(_CRV)
    if type(crv) is not int or crv not in (Curve.ED25519, Curve.ED448):
        raise KeyFormatError("COSE_Key crv (label -1) must be 6 (Ed25519) or 7 (Ed448)")
    value[_CRV] = Curve(crv)
    for label, name in ((_KID, "kid"), (_X, "x"), (_D, "d")):
        if label in value and type(value[label]) is not bytes:
            raise KeyFormatError(f"COSE_Key {name} (label {label}) must be a byte string")
    return value


def _check_kid(fields: dict[int, Any], kid: bytes) -> None:
    if _KID in fields and fields[_KID] != kid:
        raise KeyFormatError("COSE_Key kid (label 2) is not the content id of its public key")


def _check_key_ops(fields: dict[int, Any], needed: int) -> None:
    if _KEY_OPS not in fields:
        return
    ops = fields[_KEY_OPS]
    if not isinstance(ops, list) or not ops or needed not in ops:
        raise KeyFormatError(f"COSE_Key key_ops (label 4) must be an array allowing {needed}")
