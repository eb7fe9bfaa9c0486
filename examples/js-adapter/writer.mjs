// The FCP v1 writer (spec/v1/protocol.md §3.1, §4, §6, §7): a message given as named fields
// (the `message` object of spec/vectors, spec/README.md) written in deterministic CBOR, its
// content id (§3.3), and a COSE_Sign1 envelope under an Ed25519 seed (§7 "Encoding").

import { createPrivateKey, createPublicKey, sign } from "node:crypto";
import { Refusal, bstr, concat, head } from "./cbor.mjs";
import { contentIdOf } from "./cose.mjs";
import { FIELD_KEYS, decodeMessage } from "./messages.mjs";

const utf8 = new TextEncoder();
const fromHex = (text) => Uint8Array.from(Buffer.from(text, "hex"));

// One value by its kind in the field table: "uint", "text", "cid", [kind] (an array) or a
// nested table {name: [key, kind]} (a map).
function item(kind, value, path) {
  if (Array.isArray(kind)) {
    if (!Array.isArray(value)) throw new Refusal("message-invalid", `${path}: expected a list`, path);
    return concat(head(4, value.length), ...value.map((v, i) => item(kind[0], v, `${path}[${i}]`)));
  }
  if (typeof kind === "object") return map(kind, value, path);
  if (kind === "uint") {
    const n = BigInt(value);
    if (n < 0n || n >= 1n << 64n) throw new Refusal("message-invalid", `${path}: not a uint`, path);
    return head(0, n);
  }
  if (kind === "text") {
    const bytes = utf8.encode(String(value));
    return concat(head(3, bytes.length), bytes);
  }
  if (kind === "cid") return bstr(fromHex(value));
  throw new Error(`no kind ${kind}`);
}

// A map with its keys in ascending order: for unsigned keys that is the bytewise order of
// their encodings, which §3.1 rule 3 asks for.
function map(table, value, path) {
  const entries = [];
  for (const [name, v] of Object.entries(value)) {
    const field = table[name];
    if (field === undefined) throw new Refusal("message-invalid", `unknown field ${name}`, path || name);
    entries.push([field[0], item(field[1], v, path ? `${path}.${name}` : name)]);
  }
  entries.sort((a, b) => a[0] - b[0]);
  return concat(head(5, entries.length), ...entries.flatMap(([key, bytes]) => [head(0, key), bytes]));
}

// The message's bytes, checked by our own reader (a writer never emits what a reader refuses).
export function encodeFields(fields) {
  const table = FIELD_KEYS(Number(fields.type));
  if (table === undefined) throw new Refusal("message-type-unknown", `type ${fields.type}`, "type");
  const bytes = map(table, fields, "");
  decodeMessage(bytes);
  return bytes;
}

const PKCS8_ED25519 = fromHex("302e020100300506032b657004220420");
const PROTECTED = Uint8Array.of(0xa1, 0x01, 0x27); // {1: -8}: EdDSA

// §7 "Encoding": tag 18, [h'a10127', {4: kid}, payload, signature].
export function seal(payload, seed) {
  const key = createPrivateKey({ key: Buffer.from(concat(PKCS8_ED25519, seed)), format: "der", type: "pkcs8" });
  const publicRaw = new Uint8Array(createPublicKey(key).export({ format: "der", type: "spki" })).subarray(-32);
  const kid = contentIdOf(publicRaw);
  const tbs = concat(Uint8Array.of(0x84, 0x6a), utf8.encode("Signature1"), bstr(PROTECTED), bstr(new Uint8Array()), bstr(payload));
  const signature = new Uint8Array(sign(null, tbs, key));
  const unprotected = concat(Uint8Array.of(0xa1, 0x04), bstr(kid));
  return concat(Uint8Array.of(0xd2, 0x84), bstr(PROTECTED), unprotected, bstr(payload), bstr(signature));
}
