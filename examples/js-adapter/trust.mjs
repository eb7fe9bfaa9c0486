// The FCP v1 trust store (spec/v1/protocol.md §8; the trusted `open` of spec/README.md).

import { Refusal, readWhole } from "./cbor.mjs";
import { contentIdOf, parseSign1, sameBytes, verifyWith } from "./cose.mjs";

const CREDENTIAL_AAD = new TextEncoder().encode("fleetwire credential v1");
const REVOCATIONS_AAD = new TextEncoder().encode("fleetwire revocations v1");
const hex = (b) => Buffer.from(b).toString("hex");
const credentialInvalid = (d) => new Refusal("credential-invalid", d);

// A payload map with only `known` unsigned keys (§8: no extensions), as key -> item.
function payloadMap(bytes, known, what) {
  let item;
  try {
    item = readWhole(bytes, { maxDepth: 2 });
  } catch (e) {
    throw credentialInvalid(`${what} payload: ${e.message}`);
  }
  if (item.kind !== "map") throw credentialInvalid(`${what} payload is not a map`);
  const out = new Map();
  for (const [key, value] of item.value) {
    if (key.kind !== "uint" || !known.includes(Number(key.value))) throw credentialInvalid(`${what}: unknown key`);
    out.set(Number(key.value), value);
  }
  return out;
}

function need(map, key, kind, what) {
  const item = map.get(key);
  if (item === undefined) throw credentialInvalid(`${what}: field ${key} is missing`);
  if (item.kind !== kind) throw credentialInvalid(`${what}: field ${key} is not ${kind}`);
  return item.value;
}

function ascending(items, kind, what) {
  const values = items.map((x) => {
    if (x.kind !== kind) throw credentialInvalid(`${what}: an item is not ${kind}`);
    return x.value;
  });
  for (let i = 1; i < values.length; i++) {
    const [a, b] = kind === "bytes" ? [hex(values[i - 1]), hex(values[i])] : [values[i - 1], values[i]];
    if (!(a < b)) throw credentialInvalid(`${what}: not strictly ascending`);
  }
  return values;
}

function kidField(map, key, what) {
  const kid = need(map, key, "bytes", what);
  if (kid.length !== 34) throw credentialInvalid(`${what}: field ${key} is not a 34-byte kid`);
  return kid;
}

function parseCredential(payload) {
  const m = payloadMap(payload, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "credential");
  const key = need(m, 2, "bytes", "credential");
  if (key.length !== 32) throw credentialInvalid("credential key is not 32 bytes");
  const roles = ascending(need(m, 3, "array", "credential"), "uint", "credential roles");
  if (roles.length === 0 || roles.some((r) => r < 1n || r > 4n)) throw credentialInvalid("credential roles");
  const cell = m.has(4) ? need(m, 4, "uint", "credential") : undefined;
  const region = m.has(5) ? need(m, 5, "uint", "credential") : undefined;
  if (roles.includes(2n) && cell === undefined) throw credentialInvalid("a cell coordinator names its cell");
  if (roles.includes(3n) && region === undefined) throw credentialInvalid("a region coordinator names its region");
  const notBefore = need(m, 6, "uint", "credential");
  const notAfter = need(m, 7, "uint", "credential");
  if (!(notAfter > notBefore)) throw credentialInvalid("not_after must be later than not_before");
  const lineage = need(m, 8, "text", "credential");
  if (Buffer.byteLength(lineage) > 256) throw credentialInvalid("lineage over 256 bytes");
  return {
    node: need(m, 1, "uint", "credential"),
    key,
    kid: contentIdOf(key),
    roles,
    notBefore,
    notAfter,
    serial: need(m, 9, "uint", "credential"),
    issuer: kidField(m, 10, "credential"),
  };
}

function parseRevocations(payload) {
  const m = payloadMap(payload, [1, 2, 3, 4, 5], "revocation list");
  const kids = ascending(need(m, 3, "array", "revocation list"), "bytes", "revoked kids");
  if (kids.some((k) => k.length !== 34)) throw credentialInvalid("a revoked kid is not 34 bytes");
  return {
    serial: need(m, 1, "uint", "revocation list"),
    issuedAt: need(m, 2, "uint", "revocation list"),
    kids: new Set(kids.map(hex)),
    serials: new Set(ascending(need(m, 4, "array", "revocation list"), "uint", "revoked serials")),
    issuer: kidField(m, 5, "revocation list"),
    payload,
  };
}

export class TrustStore {
  constructor(rootKeys) {
    this.roots = new Map(rootKeys.map((k) => [hex(contentIdOf(k)), k]));
    this.revocations = null;
    this.credentials = [];
  }

  revokedKid(kid) {
    return this.revocations !== null && this.revocations.kids.has(hex(kid));
  }

  // A root-signed object: envelope, signer (an unrevoked root), signature under `aad`.
  // §8: a credential envelope is at most 4096 bytes, a revocation list's 4 MiB; no payload bound.
  openRootSigned(data, aad, what, maxSize) {
    let envelope;
    try {
      envelope = parseSign1(data, { maxSize, maxPayload: maxSize });
    } catch (e) {
      throw credentialInvalid(`${what} envelope: ${e.message}`);
    }
    const root = this.roots.get(hex(envelope.kid));
    if (root === undefined || this.revokedKid(envelope.kid)) throw new Refusal("issuer-untrusted", `${what} not signed by a root in force`);
    verifyWith(envelope, root, aad);
    return envelope;
  }

  applyRevocations(data) {
    const envelope = this.openRootSigned(data, REVOCATIONS_AAD, "revocation list", 4194304);
    const list = parseRevocations(envelope.payload);
    if (!sameBytes(list.issuer, envelope.kid)) throw credentialInvalid("revocation list issuer is not its signer");
    const current = this.revocations;
    if (current !== null) {
      if (list.serial < current.serial) throw new Refusal("revocations-stale", "an older revocation list");
      if (list.serial === current.serial) {
        // §8: the same serial with the same revoked kids and serials is a no-op (issued_at aside).
        const same = (a, b) => a.size === b.size && [...a].every((x) => b.has(x));
        if (!same(list.kids, current.kids) || !same(list.serials, current.serials))
          throw new Refusal("revocations-stale", "a conflicting list");
        return;
      }
    }
    this.revocations = list;
  }

  revokedCredential(c) {
    const r = this.revocations;
    return r !== null && (r.kids.has(hex(c.kid)) || r.serials.has(c.serial) || r.kids.has(hex(c.issuer)));
  }

  addCredential(data, now) {
    const envelope = this.openRootSigned(data, CREDENTIAL_AAD, "credential", 4096);
    const c = parseCredential(envelope.payload);
    if (!sameBytes(c.issuer, envelope.kid)) throw credentialInvalid("credential issuer is not its signer");
    if (this.revokedCredential(c)) throw new Refusal("key-revoked", "the credential is revoked");
    if (now >= c.notAfter) throw new Refusal("key-expired", "the credential has expired");
    this.credentials.push(c);
  }

  // The credential that makes `kid` trusted at `now` (for `role`), or the first reason not.
  keyFor(kid, now, role) {
    const candidates = this.credentials.filter((c) => sameBytes(c.kid, kid));
    if (candidates.length === 0) throw new Refusal("key-unknown", "no credential for this kid");
    let failure = null;
    for (const c of candidates) {
      let why = null;
      if (this.revokedCredential(c)) why = "key-revoked";
      else if (now < c.notBefore) why = "key-not-yet-valid";
      else if (now >= c.notAfter) why = "key-expired";
      else if (role !== undefined && !c.roles.includes(role)) why = "key-wrong-role";
      if (why === null) return c;
      failure ??= new Refusal(why, `credential ${c.serial}: ${why}`);
    }
    throw failure;
  }
}
