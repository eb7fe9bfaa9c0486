// COSE_Sign1 envelopes of FCP v1 (spec/v1/protocol.md §7), rules 1–13, and Ed25519.

import { createHash, createPublicKey, verify } from "node:crypto";
import { Refusal, bstr, concat, readItemAt, readWhole } from "./cbor.mjs";

export const MAX_HEADER = 1024;
export const MAX_HEADER_DEPTH = 8;
export const MAX_PAYLOAD = 65536;
export const MAX_ENVELOPE = 66674;

const UNDERSTOOD = new Set([1, 2, 3, 4]); // alg, crit, content type, kid

export function contentIdOf(bytes) {
  return concat(Uint8Array.of(0x12, 0x20), createHash("sha256").update(bytes).digest());
}

const hex = (b) => Buffer.from(b).toString("hex");
const notSign1 = (d) => new Refusal("envelope-not-sign1", d);
const badHeader = (d) => new Refusal("envelope-header-invalid", d);
const tooLarge = (d) => new Refusal("envelope-too-large", d);

// A byte string element of the envelope at `pos` (rule 2): [content start, end].
function bstrAt(data, pos, what) {
  if (pos >= data.length) throw notSign1(`truncated: ${what} expected`);
  const [item, end] = readItemAt(data, pos, { maxDepth: 1, onTruncated: "envelope-not-sign1" });
  if (item.kind !== "bytes") throw notSign1(`${what} is not a byte string`);
  return [end - item.value.length, end, item.value];
}

// Read the envelope's own CBOR heads with envelope codes: any CBOR fault there is rule 2.
function envelopeItem(data, pos, what) {
  try {
    return bstrAt(data, pos, what);
  } catch (e) {
    if (e instanceof Refusal && e.code !== "envelope-not-sign1") throw notSign1(`${what}: ${e.message}`);
    throw e;
  }
}

// A header label -> value map from a CBOR map item (rules 5, 6).
function labels(item, bucket) {
  if (item.kind !== "map") throw badHeader(`${bucket} bucket is not a map`);
  const out = new Map();
  for (const [key, value] of item.value) {
    let label;
    if (key.kind === "uint" || key.kind === "nint") label = Number(key.value);
    else if (key.kind === "text") label = `t:${key.value}`;
    else throw badHeader(`${bucket} label is not an integer or text`);
    out.set(label, value);
  }
  if (out.has(4)) {
    const kid = out.get(4);
    if (kid.kind !== "bytes" || kid.value.length !== 34 || kid.value[0] !== 0x12 || kid.value[1] !== 0x20)
      throw badHeader(`${bucket} kid is not a 34-byte content id`);
  }
  if (out.has(3)) {
    const kind = out.get(3).kind;
    if (kind !== "uint" && kind !== "nint" && kind !== "text") throw badHeader(`${bucket} content type is not an integer or text`);
  }
  return out;
}

// Parse an envelope (rules 1–12). Returns {protectedBytes, payload, signature, kid}.
export function parseSign1(data, { maxSize = MAX_ENVELOPE, maxPayload = MAX_PAYLOAD } = {}) {
  if (data.length > maxSize) throw tooLarge(`${data.length} bytes`); // rule 1
  if (data.length < 2) throw notSign1("truncated");
  if (data[0] !== 0xd2) throw notSign1("not tag 18 (d2)");
  if (data[1] !== 0x84) throw notSign1("tag 18 does not wrap a 4-element array (84)");
  // rule 2 for the protected element, then rules 3-5 on its content
  const [pStart, pEnd, protectedBytes] = envelopeItem(data, 2, "protected bucket");
  if (protectedBytes.length > MAX_HEADER) throw tooLarge("protected bucket over 1024 bytes");
  if (protectedBytes.length === 0) throw new Refusal("envelope-alg-unsupported", "empty protected bucket: no alg");
  let protectedItem;
  try {
    protectedItem = readWhole(protectedBytes, { maxDepth: MAX_HEADER_DEPTH });
  } catch (e) {
    if (e.code === "cbor-limit") throw tooLarge(`protected bucket: ${e.message}`);
    throw badHeader(`protected bucket: ${e.message}`);
  }
  if (protectedItem.kind === "map" && protectedItem.value.length === 0) throw badHeader("empty map written as a0");
  const prot = labels(protectedItem, "protected");
  // rule 7
  const alg = prot.get(1);
  if (alg === undefined || alg.kind !== "nint" || alg.value !== -8n)
    throw new Refusal("envelope-alg-unsupported", "protected alg is not -8");
  // rule 8
  if (prot.has(2)) {
    const crit = prot.get(2);
    if (crit.kind !== "array" || crit.value.length === 0) throw badHeader("crit is not a non-empty array");
    for (const label of crit.value) {
      if (label.kind !== "uint" && label.kind !== "nint" && label.kind !== "text") throw badHeader("crit names a non-label");
      if (label.kind === "text" || !UNDERSTOOD.has(Number(label.value)))
        throw new Refusal("envelope-crit-unknown", "crit names a label a v1 reader does not understand");
    }
  }
  // the unprotected element: rule 2 (a map; truncation), 3 (size, depth), 5 (its CBOR)
  let pos = pEnd;
  if (pos >= data.length) throw notSign1("truncated before the unprotected bucket");
  if (data[pos] >> 5 !== 5) throw notSign1("unprotected bucket is not a map");
  let unprotectedItem;
  try {
    [unprotectedItem, pos] = readItemAt(data, pos, { maxDepth: MAX_HEADER_DEPTH, onTruncated: "envelope-not-sign1" });
  } catch (e) {
    if (e.code === "envelope-not-sign1") throw e;
    if (e.code === "cbor-limit") throw tooLarge(`unprotected bucket: ${e.message}`);
    throw badHeader(`unprotected bucket: ${e.message}`);
  }
  if (unprotectedItem.end - unprotectedItem.start > MAX_HEADER) throw tooLarge("unprotected bucket over 1024 bytes");
  const unprot = labels(unprotectedItem, "unprotected");
  // rule 9
  if (unprot.has(1) || unprot.has(2)) throw badHeader("alg or crit in the unprotected bucket");
  for (const label of unprot.keys()) if (prot.has(label)) throw badHeader("a label in both buckets");
  for (const label of unprot.keys()) if (label !== 4) throw badHeader("an unprotected label other than kid");
  const kidItem = unprot.get(4) ?? prot.get(4);
  if (kidItem === undefined) throw badHeader("no kid");
  // rule 10, 2, 11
  if (pos < data.length && data[pos] === 0xf6) throw new Refusal("envelope-payload-detached", "nil payload");
  const [, payEnd, payload] = envelopeItem(data, pos, "payload");
  if (payload.length > maxPayload) throw tooLarge(`payload of ${payload.length} bytes`);
  // rule 12, 2
  const [, sigEnd, signature] = envelopeItem(data, payEnd, "signature");
  if (signature.length !== 64) throw new Refusal("envelope-signature-size", `signature of ${signature.length} bytes`);
  if (sigEnd !== data.length) throw notSign1("bytes after the envelope");
  return { protectedBytes, payload, signature, kid: kidItem.value };
}

const SPKI_ED25519 = Uint8Array.from(Buffer.from("302a300506032b6570032100", "hex"));

// Rule 13's signature check: Sig_structure ["Signature1", protected, external_aad, payload].
export function verifyWith(envelope, publicKey, externalAad = new Uint8Array()) {
  const tbs = concat(
    Uint8Array.of(0x84, 0x6a),
    new TextEncoder().encode("Signature1"),
    bstr(envelope.protectedBytes),
    bstr(externalAad),
    bstr(envelope.payload),
  );
  const key = createPublicKey({ key: Buffer.from(concat(SPKI_ED25519, publicKey)), format: "der", type: "spki" });
  if (!verify(null, tbs, key, envelope.signature)) throw new Refusal("signature-invalid", "the signature does not verify");
}

export function sameBytes(a, b) {
  return hex(a) === hex(b);
}
