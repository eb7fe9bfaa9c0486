#!/usr/bin/env node
// An FCP v1 conformance adapter in JavaScript, written from spec/ alone (spec/README.md,
// "Adapter protocol"): one JSON request per line on stdin, one JSON answer per line on stdout.
// No npm dependencies: Node's own crypto does Ed25519 and SHA-256.

import { createInterface } from "node:readline";
import { Refusal } from "./cbor.mjs";
import { contentIdOf, parseSign1, sameBytes, verifyWith } from "./cose.mjs";
import { decodeMessage } from "./messages.mjs";
import { TrustStore } from "./trust.mjs";
import { encodeFields, seal } from "./writer.mjs";

const OPS = ["hello", "decode", "open", "encode", "content_id", "sign"];

const fromHex = (text) => {
  if (typeof text !== "string" || !/^([0-9a-f]{2})*$/i.test(text)) throw new TypeError("not hex");
  return Uint8Array.from(Buffer.from(text, "hex"));
};
const toHex = (bytes) => Buffer.from(bytes).toString("hex");

function accepted(bytes) {
  decodeMessage(bytes);
  // The reader accepts only the deterministic encoding, so the bytes are their own re-encoding.
  return { ok: true, hex: toHex(bytes), content_id: toHex(contentIdOf(bytes)) };
}

function open(data, publicKey) {
  const envelope = parseSign1(data);
  if (!sameBytes(envelope.kid, contentIdOf(publicKey)))
    throw new Refusal("envelope-kid-mismatch", "the kid is not the verifying key's");
  verifyWith(envelope, publicKey);
  return accepted(envelope.payload);
}

function openTrusted(data, request) {
  const store = new TrustStore(request.roots.map(fromHex));
  const now = BigInt(request.now);
  for (const list of request.revocations ?? []) store.applyRevocations(fromHex(list));
  for (const credential of request.credentials ?? []) store.addCredential(fromHex(credential), now);
  const envelope = parseSign1(data);
  const role = request.role === undefined ? undefined : BigInt(request.role);
  const credential = store.keyFor(envelope.kid, now, role);
  verifyWith(envelope, credential.key);
  const answer = accepted(envelope.payload);
  const { issuer } = decodeMessage(envelope.payload);
  if (issuer !== credential.node) throw new Refusal("issuer-mismatch", "the issuer is not the signing key's node");
  return answer;
}

function answer(line) {
  let request;
  try {
    // Integers beyond 2^53 (uint64 fields) would lose digits as JSON numbers: read them as text.
    request = JSON.parse(line.replace(/([:,[]\s*)(\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
  } catch {
    return { ok: false, code: "adapter-protocol", detail: "a request that is not JSON" };
  }
  try {
    if (request.op === "hello")
      return { ok: true, name: "FCP v1 adapter in JavaScript (examples/js-adapter)", versions: [1, 1], ops: OPS, machines: [] };
    if (request.op === "encode") {
      if (request.version !== undefined && request.version !== 1)
        return { ok: false, code: "version-unsupported", detail: `this adapter writes v1 only` };
      return accepted(encodeFields(request.message));
    }
    const data = fromHex(request.hex);
    if (request.op === "decode") {
      if (request.version !== undefined && request.version !== 1)
        return { ok: false, code: "version-unsupported", detail: `this adapter reads v1 only` };
      return accepted(data);
    }
    if (request.op === "content_id") return { ok: true, content_id: toHex(contentIdOf(data)) };
    if (request.op === "sign") {
      decodeMessage(data); // sign only what a reader accepts
      return { ok: true, hex: toHex(seal(data, fromHex(request.seed))) };
    }
    if (request.op === "open" && request.roots !== undefined) return openTrusted(data, request);
    if (request.op === "open") return open(data, fromHex(request.public_key));
    return { ok: false, code: "adapter-protocol", detail: `unknown op ${request.op}` };
  } catch (e) {
    if (e instanceof Refusal) {
      const out = { ok: false, code: e.code, detail: e.message };
      if (e.field !== undefined) out.field = e.field;
      return out;
    }
    return { ok: false, code: "adapter-protocol", detail: `bad request: ${e.message}` };
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === "") continue;
  process.stdout.write(JSON.stringify(answer(line)) + "\n");
}
