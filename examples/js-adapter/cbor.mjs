// A strict CBOR reader for FCP v1 (spec/v1/protocol.md §3), written from the spec alone.
//
// It reads exactly what a v1 reader must accept: RFC 8949 core deterministic encoding
// (shortest heads, definite lengths, map keys strictly ascending by their encoded bytes,
// shortest floats, the one NaN f97e00), no tags, valid UTF-8, within the two limits of §3.4.
// Because it refuses everything else while parsing, a value it returns re-encodes to exactly
// its input: the adapter answers with the input bytes themselves.
//
// Every refusal throws a Refusal with the spec's code (§9); field paths are added above.

export class Refusal extends Error {
  constructor(code, detail, field) {
    super(detail);
    this.code = code;
    this.field = field;
  }
}

export const MAX_SIZE = 65536; // §3.4
export const MAX_DEPTH = 8; // §3.4: the outermost map is level 1

const utf8 = new TextDecoder("utf-8", { fatal: true });

// Item kinds: {kind: "uint" | "nint" | "bytes" | "text" | "array" | "map" | "float" | "simple",
//              value, start, end}; maps keep their entries as [key, value] pairs in order.

// Is a double exactly a half-precision value? (RFC 8949 §4.2.2 preferred serialization)
function fitsHalf(v) {
  if (v === 0 || !Number.isFinite(v)) return true;
  const a = Math.abs(v);
  if (a > 65504 || a < 2 ** -24) return false;
  if (a < 2 ** -14) return Number.isInteger(a * 2 ** 24); // subnormal half
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  return Number.isInteger(a / 2 ** (e - 10));
}

function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

class Reader {
  constructor(bytes, { maxDepth, onTruncated = "cbor-malformed" }) {
    this.b = bytes;
    this.p = 0;
    this.maxDepth = maxDepth;
    this.truncated = onTruncated;
  }

  need(n, what) {
    if (this.b.length - this.p < n) throw new Refusal(this.truncated, `truncated: ${what} at ${this.p}`);
  }

  // The head at the cursor: [major, additional info, argument as BigInt].
  head() {
    this.need(1, "an item");
    const start = this.p;
    const initial = this.b[this.p++];
    const major = initial >> 5;
    const ai = initial & 31;
    if (ai < 24) return [major, ai, BigInt(ai)];
    if (ai === 31) {
      if (major === 7) throw new Refusal("cbor-malformed", `a break with nothing to end at ${start}`);
      if (major === 0 || major === 1 || major === 6)
        throw new Refusal("cbor-malformed", `indefinite length for major type ${major} at ${start}`);
      throw new Refusal("cbor-not-deterministic", `indefinite length at ${start}`);
    }
    if (ai > 27) throw new Refusal("cbor-malformed", `reserved additional information ${ai} at ${start}`);
    const width = 1 << (ai - 24);
    this.need(width, "a head argument");
    let arg = 0n;
    for (let i = 0; i < width; i++) arg = (arg << 8n) | BigInt(this.b[this.p++]);
    if (major !== 7) {
      const shortest = width === 1 ? 24n : 1n << BigInt(width * 4);
      if (arg < shortest) throw new Refusal("cbor-not-deterministic", `a head not in its shortest form at ${start}`);
    }
    return [major, ai, arg];
  }

  item(depth) {
    const start = this.p;
    const [major, ai, arg] = this.head();
    switch (major) {
      case 0:
        return { kind: "uint", value: arg, start, end: this.p };
      case 1:
        return { kind: "nint", value: -1n - arg, start, end: this.p };
      case 2:
      case 3: {
        // A declared length past the end of the input is truncation, never a limit (§3.4).
        if (arg > BigInt(this.b.length - this.p))
          throw new Refusal(this.truncated, `a string at ${start} runs past the end of the input`);
        const bytes = this.b.subarray(this.p, this.p + Number(arg));
        this.p += Number(arg);
        if (major === 2) return { kind: "bytes", value: bytes, start, end: this.p };
        let text;
        try {
          text = utf8.decode(bytes);
        } catch {
          throw new Refusal("cbor-decode", `a text string at ${start} is not valid UTF-8`);
        }
        return { kind: "text", value: text, start, end: this.p };
      }
      case 4:
      case 5: {
        const count = major === 4 ? arg : 2n * arg;
        if (count > BigInt(this.b.length - this.p))
          throw new Refusal(this.truncated, `a container at ${start} declares more items than bytes remain`);
        if (depth + 1 > this.maxDepth) throw new Refusal("cbor-limit", `nesting deeper than ${this.maxDepth} at ${start}`);
        if (major === 4) {
          const items = [];
          for (let i = 0n; i < arg; i++) items.push(this.item(depth + 1));
          return { kind: "array", value: items, start, end: this.p };
        }
        const entries = [];
        let previous = null;
        for (let i = 0n; i < arg; i++) {
          const key = this.item(depth + 1);
          const keyBytes = this.b.subarray(key.start, key.end);
          if (previous !== null && compareBytes(keyBytes, previous) <= 0)
            throw new Refusal("cbor-not-deterministic", `map keys out of order or repeated at ${key.start}`);
          previous = keyBytes;
          entries.push([key, this.item(depth + 1)]);
        }
        return { kind: "map", value: entries, start, end: this.p };
      }
      case 6:
        throw new Refusal("cbor-decode", `a tag at ${start}: no tags in FCP`);
      default: {
        if (ai < 24) return { kind: "simple", value: ai, start, end: this.p };
        if (ai === 24) {
          if (arg < 32n) throw new Refusal("cbor-malformed", `a two-byte simple value below 32 at ${start}`);
          return { kind: "simple", value: Number(arg), start, end: this.p };
        }
        const view = new DataView(this.b.buffer, this.b.byteOffset + start + 1, this.p - start - 1);
        let value;
        if (ai === 25) {
          value = halfToNumber(view.getUint16(0));
          if (Number.isNaN(value) && arg !== 0x7e00n)
            throw new Refusal("cbor-not-deterministic", `a NaN other than f97e00 at ${start}`);
        } else {
          value = ai === 26 ? view.getFloat32(0) : view.getFloat64(0);
          const shorter = Number.isNaN(value) || fitsHalf(value) || (ai === 27 && Math.fround(value) === value);
          if (shorter) throw new Refusal("cbor-not-deterministic", `a float not in its shortest form at ${start}`);
        }
        return { kind: "float", value, start, end: this.p };
      }
    }
  }
}

// One whole deterministic CBOR item within the §3.4 limits, nothing after it.
export function readMessageItem(bytes) {
  if (bytes.length > MAX_SIZE) throw new Refusal("cbor-limit", `${bytes.length} bytes: more than ${MAX_SIZE}`);
  const reader = new Reader(bytes, { maxDepth: MAX_DEPTH });
  // The outermost item is level 1 when it is a container; the reader counts container levels.
  const item = reader.item(0);
  if (reader.p !== bytes.length) throw new Refusal("cbor-malformed", `${bytes.length - reader.p} bytes after the item`);
  return item;
}

// A deterministic item at `offset` of `bytes` (for the envelope, §7): returns [item, end].
export function readItemAt(bytes, offset, options) {
  const reader = new Reader(bytes, options);
  reader.p = offset;
  const item = reader.item(0);
  return [item, reader.p];
}

export function readWhole(bytes, options) {
  const reader = new Reader(bytes, options);
  const item = reader.item(0);
  if (reader.p !== bytes.length) throw new Refusal("cbor-malformed", `${bytes.length - reader.p} bytes after the item`);
  return item;
}

// --- writing: only what the adapter needs (the COSE Sig_structure, §7) ------------------------

export function head(major, n) {
  const len = BigInt(n);
  if (len < 24n) return Uint8Array.of((major << 5) | Number(len));
  if (len < 0x100n) return Uint8Array.of((major << 5) | 24, Number(len));
  if (len < 0x10000n) return Uint8Array.of((major << 5) | 25, Number(len >> 8n), Number(len & 0xffn));
  if (len < 0x100000000n) {
    const out = new Uint8Array(5);
    out[0] = (major << 5) | 26;
    new DataView(out.buffer).setUint32(1, Number(len));
    return out;
  }
  const out = new Uint8Array(9);
  out[0] = (major << 5) | 27;
  new DataView(out.buffer).setBigUint64(1, len);
  return out;
}

export function bstr(bytes) {
  return concat(head(2, bytes.length), bytes);
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
