// FCP v1 message rules (spec/v1/protocol.md §2, §4–§6), in the order of §5.2.
//
// decodeMessage(bytes) returns nothing useful on success (the bytes are already the one
// deterministic encoding, so the adapter echoes them) and throws a Refusal otherwise, with
// the field path of §5.2 / §9 where the rule names one.

import { Refusal, readMessageItem } from "./cbor.mjs";

const VERSION = 1n; // this reader's version; its window is [1, 1]
const UINT64_MAX = (1n << 64n) - 1n;

const invalid = (field, detail) => new Refusal("message-invalid", detail, field);

// --- field kinds: each checks one item and names `path` when it refuses ----------------------

function uint(item, path) {
  if (item.kind !== "uint") throw invalid(path, `expected an unsigned integer, got ${item.kind}`);
  return item.value;
}

function range(low, high) {
  return (item, path) => {
    const v = uint(item, path);
    if (v < BigInt(low) || v > BigInt(high)) throw invalid(path, `${v} is outside ${low}..${high}`);
    return v;
  };
}

function text(item, path) {
  if (item.kind !== "text") throw invalid(path, `expected a text string, got ${item.kind}`);
  if (Buffer.byteLength(item.value, "utf8") > 256)
    throw invalid(path, "text longer than 256 bytes");
  return item.value;
}

function contentId(item, path) {
  if (item.kind !== "bytes") throw invalid(path, `expected a content id (byte string), got ${item.kind}`);
  const b = item.value;
  if (b.length !== 34 || b[0] !== 0x12 || b[1] !== 0x20) throw invalid(path, "not a 34-byte content id 0x12 0x20 ...");
  return b;
}

function arrayOf(kind, min, max) {
  return (item, path) => {
    if (item.kind !== "array") throw invalid(path, `expected an array, got ${item.kind}`);
    const n = item.value.length;
    if (n < min) throw invalid(path, n === 0 ? "an optional array is absent, never empty" : `fewer than ${min} items`);
    if (n > max) throw invalid(path, `more than ${max} items`);
    return item.value.map((x, i) => kind(x, `${path}[${i}]`));
  };
}

// A nested map with a fixed table: fields in key order, no unknown keys (§5.3).
function struct(table) {
  return (item, path) => {
    if (item.kind !== "map") throw invalid(path, `expected a map, got ${item.kind}`);
    const known = new Set(table.map(([key]) => key));
    const values = mapByKey(item, path);
    const out = {};
    for (const [key, name, kind, optional] of table) {
      const value = values.get(key);
      const where = `${path}.${name}`;
      if (value === undefined) {
        if (!optional) throw invalid(where, `required field (key ${key}) is missing`);
        continue;
      }
      out[name] = kind(value, where);
    }
    for (const key of values.keys()) if (!known.has(key)) throw invalid(path, `unknown key ${key} in a nested map`);
    return out;
  };
}

// Map entries by unsigned key (as Number; FCP keys are small). `path` names a nested map.
function mapByKey(item, path) {
  const out = new Map();
  for (const [key, value] of item.value) {
    if (key.kind !== "uint") throw invalid(path, "a nested map key is not an unsigned integer");
    out.set(key.value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(key.value) : key.value, value);
  }
  return out;
}

const versions = (item, path) => {
  // §6.1: two integers, 1 <= oldest <= newest; every fault names `versions`.
  if (item.kind !== "array" || item.value.length !== 2 || item.value.some((x) => x.kind !== "uint"))
    throw invalid(path, "versions is [oldest, newest]");
  const [oldest, newest] = item.value.map((x) => x.value);
  if (oldest < 1n || oldest > newest) throw invalid(path, "1 <= oldest <= newest");
  return [oldest, newest];
};

const capability = struct([
  [0, "kind", text],
  [1, "capacity", uint],
  [2, "unit", text],
  [3, "valid_from", uint],
  [4, "valid_until", uint],
]);

const terms = struct([
  [0, "promisor", uint],
  [1, "promisee", uint],
  [2, "action", text],
  [3, "quantity", uint],
  [4, "unit", text],
  [5, "deadline", uint],
  [6, "rests_on", arrayOf(contentId, 1, 64), true],
]);

// Header keys 1..7 (§4); key 0 is read first (§5.2 step 3).
const HEADER = [
  [1, "version", uint],
  [2, "min_version", uint],
  [3, "issuer", uint],
  [4, "issued_at", uint],
  [5, "sequence", uint],
  [6, "references", arrayOf(contentId, 1, 64), true],
  [7, "critical", arrayOf(uint, 1, 16), true],
];

// Body tables per type code (§6): [key, name, kind, optional].
const BODIES = {
  1: [
    [8, "capabilities", arrayOf(capability, 0, 64)],
    [9, "versions", versions],
    [10, "lineage", text],
    [11, "cell", uint, true],
  ],
  2: [
    [8, "state", range(0, 4)],
    [9, "terms", terms, true],
    [10, "commitment", contentId, true],
    [11, "reason", text, true],
  ],
  3: [
    [8, "code", uint],
    [9, "severity", range(1, 5)],
    [10, "scope", range(0, 2)],
    [11, "scope_id", uint],
    [12, "affects", arrayOf(contentId, 1, 64), true],
    [13, "digest", contentId, true],
    [14, "detail", text, true],
  ],
  4: [
    [8, "resource", text],
    [9, "term_ms", uint],
    [10, "priority", uint],
  ],
  5: [
    [8, "resource", text],
    [9, "holder", uint],
    [10, "claim", contentId],
    [11, "fencing_token", uint],
    [12, "term_ms", uint],
    [13, "expires_at", uint],
  ],
  6: [
    [8, "resource", text],
    [9, "fencing_token", uint],
    [10, "grant", contentId],
    [11, "term_ms", uint],
  ],
  7: [
    [8, "resource", text],
    [9, "fencing_token", uint],
    [10, "grant", contentId],
  ],
  8: [
    [8, "resource", text],
    [9, "fencing_token", uint],
    [10, "holder", uint],
    [11, "effective_at", uint],
    [12, "reason", text, true],
  ],
  9: [
    [8, "resource", text],
    [9, "fencing_token", uint],
    [10, "holder", uint],
    [11, "expired_at", uint],
  ],
};

// §6.2: the field named is the one whose absence or presence breaks the rule.
function commitmentRules(body) {
  if (body.state === 0n) {
    if (body.terms === undefined) throw invalid("terms", "an offer carries terms");
    if (body.commitment !== undefined) throw invalid("commitment", "an offer names no commitment");
  } else {
    if (body.commitment === undefined) throw invalid("commitment", "a later step names its offer");
    if (body.terms !== undefined) throw invalid("terms", "only the offer carries terms");
  }
}

// Returns {issuer} of a message that a v1 reader accepts; throws a Refusal otherwise.
export function decodeMessage(bytes) {
  const item = readMessageItem(bytes); // step 1 (and step 10: the reader is strict)
  // step 2
  if (item.kind !== "map") throw new Refusal("message-invalid", "a message is a CBOR map");
  const fields = new Map();
  for (const [key, value] of item.value) {
    if (key.kind !== "uint") throw new Refusal("message-invalid", "a message key is not an unsigned integer");
    fields.set(key.value, value);
  }
  const get = (key) => fields.get(BigInt(key));
  // step 3
  const typeItem = get(0);
  if (typeItem === undefined || typeItem.kind !== "uint") throw invalid("type", "key 0 (type) is missing or not an unsigned integer");
  const type = typeItem.value;
  // step 4
  const header = {};
  for (const [key, name, kind, optional] of HEADER) {
    const value = get(key);
    const where = `header.${name}`;
    if (value === undefined) {
      if (!optional) throw invalid(where, `required header field (key ${key}) is missing`);
      continue;
    }
    header[name] = kind(value, where);
  }
  // step 5 (§5.1)
  if (header.min_version > header.version) throw invalid("header.min_version", "min_version above version");
  if (header.min_version > VERSION) throw new Refusal("version-unsupported", "needs a newer reader", "header.min_version");
  if (header.version < 1n) throw new Refusal("version-unsupported", "older than version 1", "header.version");
  if (header.min_version < 1n) throw invalid("header.min_version", "versions start at 1");
  // step 6
  const body = BODIES[type <= 9n ? Number(type) : -1];
  if (body === undefined) throw new Refusal("message-type-unknown", `type ${type} is not a v1 type`, "type");
  // step 7
  const known = new Set([0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, ...body.map(([key]) => BigInt(key))]);
  for (const key of header.critical ?? [])
    if (!known.has(key)) throw new Refusal("critical-field-unknown", `critical key ${key} is not known`, "header.critical");
  // step 8
  const values = {};
  for (const [key, name, kind, optional] of body) {
    const value = get(key);
    if (value === undefined) {
      if (!optional) throw invalid(name, `required field (key ${key}) is missing`);
      continue;
    }
    values[name] = kind(value, name);
  }
  // step 9
  if (type === 2n) commitmentRules(values);
  return { issuer: header.issuer, type, header, body: values };
}

// Name → [key, kind] tables of a type, for the writer (writer.mjs): the same tables as the
// reader's, so the two cannot disagree on a key.
const KIND_NAMES = new Map([[uint, "uint"], [text, "text"], [contentId, "cid"], [versions, ["uint"]]]);
const NESTED = new Map([[capability, "capability"], [terms, "terms"]]);
const TABLES = {
  capability: [[0, "kind", text], [1, "capacity", uint], [2, "unit", text], [3, "valid_from", uint], [4, "valid_until", uint]],
  terms: [[0, "promisor", uint], [1, "promisee", uint], [2, "action", text], [3, "quantity", uint], [4, "unit", text],
    [5, "deadline", uint], [6, "rests_on", "cids"]],
};
function writerKind(kind, name) {
  if (KIND_NAMES.has(kind)) return KIND_NAMES.get(kind);
  if (kind === "cids") return ["cid"];
  if (NESTED.has(kind)) return writerTable(TABLES[NESTED.get(kind)]);
  // range() and arrayOf() make closures: their names say what they hold.
  if (["state", "severity", "scope"].includes(name)) return "uint";
  if (["references", "affects", "rests_on"].includes(name)) return ["cid"];
  if (name === "critical") return ["uint"];
  if (name === "capabilities") return [writerTable(TABLES.capability)];
  throw new Error(`no writer kind for ${name}`);
}
function writerTable(rows) {
  const out = {};
  for (const [key, name, kind] of rows) out[name] = [key, writerKind(kind, name)];
  return out;
}
export function FIELD_KEYS(type) {
  const body = BODIES[type];
  if (body === undefined) return undefined;
  return { type: [0, "uint"], ...writerTable(HEADER), ...writerTable(body) };
}
