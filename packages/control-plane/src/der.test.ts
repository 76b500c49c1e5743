import { describe, expect, it } from 'vitest';
import {
  bitString,
  commonName,
  elements,
  readCsr,
  sequence,
  time,
  tlv,
  unsignedInteger,
} from './der.js';

const hex = (b: Buffer) => b.toString('hex');

describe('der', () => {
  it('uses the short length form below 128 bytes and the long form above', () => {
    expect(hex(tlv(0x04, Buffer.alloc(127))).slice(0, 4)).toBe('047f');
    expect(hex(tlv(0x04, Buffer.alloc(128))).slice(0, 6)).toBe('048180');
    expect(hex(tlv(0x04, Buffer.alloc(300))).slice(0, 8)).toBe('0482012c');
  });

  it('encodes non-negative integers minimally', () => {
    expect(hex(unsignedInteger(Buffer.from('0001', 'hex')))).toBe('020101');
    expect(hex(unsignedInteger(Buffer.from('80', 'hex')))).toBe('02020080');
    expect(hex(unsignedInteger(Buffer.from('0000', 'hex')))).toBe('020100');
  });

  it('writes UTCTime through 2049 and GeneralizedTime after', () => {
    expect(time(new Date('2049-12-31T23:59:59.900Z')).toString('latin1')).toBe(
      '\x17\x0d491231235959Z',
    );
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1')).toBe(
      '\x18\x0f20500101000000Z',
    );
  });

  it('writes a one-CN name as UTF8String', () => {
    expect(hex(commonName('é'))).toBe('300d310b300906035504030c02c3a9');
  });

  it('splits a SEQUENCE into its elements, and refuses truncated or trailing input', () => {
    const inner = sequence(tlv(0x04, Buffer.alloc(200)));
    expect(elements(sequence(inner, tlv(0x05)))).toEqual([inner, tlv(0x05)]);
    expect(() => elements(sequence(inner).subarray(0, 100))).toThrow(RangeError);
    expect(() => elements(Buffer.concat([sequence(inner), Buffer.from([0])]))).toThrow(RangeError);
  });

  it('reads the parts of a PKCS#10 request', () => {
    const spki = sequence(tlv(0x04, Buffer.from('key')));
    const info = sequence(tlv(0x02, Buffer.from([0])), commonName('h'), spki, tlv(0xa0));
    const algorithm = sequence(tlv(0x06, Buffer.from([1])));
    const csr = sequence(info, algorithm, bitString(Buffer.from('sig')));
    expect(readCsr(csr)).toEqual({ info, spki, algorithm, signature: Buffer.from('sig') });
    expect(() => readCsr(sequence(info, algorithm))).toThrow(RangeError);
  });
});
