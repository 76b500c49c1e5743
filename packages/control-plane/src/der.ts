// The few DER (X.690) encodings the CA needs to issue a client certificate without an ASN.1
// library on the hot path: tag-length-value, INTEGER, times, a one-CN name, and the parts of a
// PKCS#10 request (RFC 2986). Pure: no keys, no clock. Must not judge what it reads: the key and
// signature are checked by node:crypto, certificates are read by node:crypto.

/** One tag-length-value: definite length, short or long form. */
export function tlv(tag: number, ...content: Uint8Array[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let head: number[];
  if (n < 0x80) head = [tag, n];
  else {
    const len: number[] = [];
    for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) len.unshift(rest & 0xff);
    head = [tag, 0x80 | len.length, ...len];
  }
  return Buffer.concat([Buffer.from(head), body]);
}

export const sequence = (...content: Uint8Array[]) => tlv(0x30, ...content);

/** A non-negative INTEGER from big-endian bytes, minimal as DER requires. */
export function unsignedInteger(bytes: Uint8Array): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = Buffer.from(bytes.subarray(i));
  return tlv(0x02, v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after; whole seconds, UTC. */
export function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  return d.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'))
    : tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

const OID_COMMON_NAME = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]);

/** A Name holding one commonName, as UTF8String. */
export function commonName(cn: string): Buffer {
  return sequence(tlv(0x31, sequence(OID_COMMON_NAME, tlv(0x0c, Buffer.from(cn, 'utf8')))));
}

/** A BIT STRING of whole bytes (no unused bits). */
export const bitString = (bytes: Uint8Array) => tlv(0x03, Buffer.from([0]), bytes);

/** Header length and content length of the TLV at `at`; throws when it runs past the end. */
function header(der: Uint8Array, at: number): { head: number; length: number } {
  const first = der[at + 1];
  if (first === undefined) throw new RangeError('DER: truncated');
  if (first < 0x80) return { head: 2, length: first };
  const n = first & 0x7f;
  if (n === 0 || n > 4) throw new RangeError('DER: unsupported length');
  let length = 0;
  for (let i = 0; i < n; i++) length = length * 256 + (der[at + 2 + i] ?? Number.NaN);
  if (!(at + 2 + n + length <= der.length)) throw new RangeError('DER: truncated');
  return { head: 2 + n, length };
}

/** The elements (each whole) inside the one TLV that `der` must be, in order. */
export function elements(der: Uint8Array): Buffer[] {
  const outer = header(der, 0);
  const end = outer.head + outer.length;
  if (end !== der.length) throw new RangeError('DER: trailing bytes');
  const out: Buffer[] = [];
  for (let at = outer.head; at < end; ) {
    const h = header(der, at);
    const next = at + h.head + h.length;
    if (next > end) throw new RangeError('DER: element past its parent');
    out.push(Buffer.from(der.subarray(at, next)));
    at = next;
  }
  return out;
}

export interface CsrParts {
  /** certificationRequestInfo, whole: what the signature covers. */
  info: Buffer;
  /** subjectPKInfo, whole. */
  spki: Buffer;
  /** signatureAlgorithm, whole. */
  algorithm: Buffer;
  /** The signature bytes (the BIT STRING's content). */
  signature: Buffer;
}

/** Splits a DER PKCS#10 request into its parts; throws RangeError when it is not one. */
export function readCsr(der: Uint8Array): CsrParts {
  const [info, algorithm, bits, ...rest] = elements(der);
  if (!info || !algorithm || !bits || rest.length > 0 || info[0] !== 0x30 || bits[0] !== 0x03) {
    throw new RangeError('DER: not a certification request');
  }
  const spki = elements(info)[2];
  const content = bits.subarray(header(bits, 0).head);
  if (spki?.[0] !== 0x30 || content[0] !== 0)
    throw new RangeError('DER: not a certification request');
  return { info, spki, algorithm, signature: Buffer.from(content.subarray(1)) };
}
