import { describe, expect, it } from 'vitest';
import { SiemError } from './errors.js';
import { parseTarget } from './target-url.js';

describe('parseTarget', () => {
  it('reads transport, host, port, format, facility and ca', () => {
    expect(parseTarget('syslog+udp://siem.example:5514?format=json&facility=auth')).toEqual({
      kind: 'syslog',
      transport: 'udp',
      host: 'siem.example',
      port: 5514,
      format: 'json',
      facility: 4,
      url: 'syslog+udp://siem.example:5514?format=json&facility=auth',
    });
    expect(parseTarget('syslog+tls://[::1]?ca=/etc/ssl/siem.pem')).toMatchObject({
      transport: 'tls',
      host: '::1',
      port: 6514,
      format: 'cef',
      facility: 16,
      ca: '/etc/ssl/siem.pem',
    });
    expect(parseTarget('syslog+tcp://10.0.0.9')).toMatchObject({ transport: 'tcp', port: 601 });
    expect(parseTarget('syslog+udp://10.0.0.9')).toMatchObject({ port: 514 });
    expect(parseTarget('file:///var/log/bulkhead/events.jsonl')).toEqual({
      kind: 'file',
      path: '/var/log/bulkhead/events.jsonl',
      url: 'file:///var/log/bulkhead/events.jsonl',
    });
  });

  it.each([
    ['http://siem:514', /scheme http is not one of syslog\+udp, syslog\+tcp, syslog\+tls, file/],
    ['syslog+udp://siem:514?format=xml', /format xml is not cef or json/],
    ['syslog+udp://siem:514?facility=local9', /facility local9 is not one of kern, /],
    ['syslog+udp://siem:99999', /port 99999 is out of range 1-65535/],
    ['syslog+tcp://siem:abc', /port "abc" is not a number/],
    ['syslog+tcp://siem:0', /port 0 is out of range/],
    ['syslog+udp://siem:514?fromat=cef', /parameter fromat is not supported for syslog\+udp/],
    ['syslog+udp://siem:514?ca=/x.pem', /parameter ca is not supported for syslog\+udp/],
    ['syslog+tls://siem?ca=ca.pem', /ca ca.pem must be an absolute path/],
    ['syslog+tcp://user:pw@siem', /credentials in the URL are not supported/],
    ['syslog+tcp://siem/some/path', /path \/some\/path is not supported/],
    ['syslog+udp://', /host is missing|not a URL/],
    ['file://remote/var/log/x.jsonl', /file URLs take no host \(got remote\)/],
    ['file:///var/log/', /absolute file name/],
    ['file:///var/log/x.jsonl?format=cef', /file targets take no parameters \(got format\)/],
    ['siem.example:514', /scheme siem.example is not one of/],
    ['not a url', /not a URL/],
  ])('rejects %s naming the bad part', (url, message) => {
    let err: unknown;
    try {
      parseTarget(url);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SiemError);
    expect((err as SiemError).code).toBe('SIEM_CONFIG_INVALID');
    expect((err as SiemError).message).toContain(JSON.stringify(url));
    expect((err as SiemError).message).toMatch(message);
  });
});
