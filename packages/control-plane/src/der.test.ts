import { describe, expect, it } from 'vitest';
import { commonName, firstElement, sequence, time, tlv, unsignedInteger } from './der.js';

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

  it('cuts the first element out of a SEQUENCE, and refuses truncated input', () => {
    const inner = sequence(tlv(0x04, Buffer.alloc(200)));
    expect(firstElement(sequence(inner, tlv(0x05)))).toEqual(inner);
    expect(() => firstElement(sequence(inner).subarray(0, 100))).toThrow(RangeError);
  });
});
