import { isAbsolute } from 'node:path';
import { SiemError } from './errors.js';
import type { SyslogFormat, TargetConfig } from './types.js';

const TRANSPORTS = { 'syslog+udp:': 'udp', 'syslog+tcp:': 'tcp', 'syslog+tls:': 'tls' } as const;
// IANA ports: syslog/udp (RFC 5426), syslog-conn/tcp (RFC 6587), syslog-tls (RFC 5425).
const DEFAULT_PORTS = { udp: 514, tcp: 601, tls: 6514 } as const;

/** RFC 5424 section 6.2.1 facility numbers. */
export const FACILITIES: Readonly<Record<string, number>> = {
  kern: 0,
  user: 1,
  mail: 2,
  daemon: 3,
  auth: 4,
  syslog: 5,
  lpr: 6,
  news: 7,
  uucp: 8,
  cron: 9,
  authpriv: 10,
  ftp: 11,
  ntp: 12,
  audit: 13,
  alert: 14,
  clock: 15,
  local0: 16,
  local1: 17,
  local2: 18,
  local3: 19,
  local4: 20,
  local5: 21,
  local6: 22,
  local7: 23,
};

/**
 * Parses one `--siem` URL. Throws SiemError SIEM_CONFIG_INVALID naming the bad part, so a
 * typo fails the start rather than silently exporting nothing.
 */
export function parseTarget(url: string): TargetConfig {
  const bad = (part: string): never => {
    throw new SiemError(
      'SIEM_CONFIG_INVALID',
      `invalid SIEM target ${JSON.stringify(url)}: ${part}`,
    );
  };
  let u: URL;
  try {
    u = new URL(url);
  } catch (cause) {
    const port = /^[a-z+]+:\/\/[^/?#]*:([^/?#]*)/i.exec(url)?.[1];
    if (port !== undefined && !/^\d+$/.test(port))
      bad(`port ${JSON.stringify(port)} is not a number`);
    if (port !== undefined && Number(port) > 65535) bad(`port ${port} is out of range 1-65535`);
    throw new SiemError(
      'SIEM_CONFIG_INVALID',
      `invalid SIEM target ${JSON.stringify(url)}: not a URL`,
      {
        cause,
      },
    );
  }
  if (u.username || u.password) bad('credentials in the URL are not supported');
  if (u.hash) bad('a #fragment is not supported');

  if (u.protocol === 'file:') {
    if (u.hostname && u.hostname !== 'localhost') bad(`file URLs take no host (got ${u.hostname})`);
    if ([...u.searchParams.keys()].length > 0) {
      bad(`file targets take no parameters (got ${[...u.searchParams.keys()].join(', ')})`);
    }
    const path = decodeURIComponent(u.pathname);
    if (!isAbsolute(path) || path.endsWith('/')) bad('file path must be an absolute file name');
    return { kind: 'file', path, url };
  }

  const transport = TRANSPORTS[u.protocol as keyof typeof TRANSPORTS];
  if (!transport) {
    bad(`scheme ${u.protocol.slice(0, -1)} is not one of syslog+udp, syslog+tcp, syslog+tls, file`);
  }
  const t = transport as 'udp' | 'tcp' | 'tls';
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) bad('host is missing');
  if (u.pathname && u.pathname !== '/') bad(`path ${u.pathname} is not supported`);
  const port = u.port ? Number(u.port) : DEFAULT_PORTS[t];
  if (port < 1 || port > 65535) bad(`port ${port} is out of range 1-65535`);

  const allowed = t === 'tls' ? ['format', 'facility', 'ca'] : ['format', 'facility'];
  for (const key of u.searchParams.keys()) {
    if (!allowed.includes(key)) {
      bad(`parameter ${key} is not supported for syslog+${t} (use ${allowed.join(', ')})`);
    }
  }
  const format = u.searchParams.get('format') ?? 'cef';
  if (format !== 'cef' && format !== 'json') bad(`format ${format} is not cef or json`);
  const facilityName = u.searchParams.get('facility') ?? 'local0';
  const facility = FACILITIES[facilityName];
  if (facility === undefined)
    bad(`facility ${facilityName} is not one of ${Object.keys(FACILITIES).join(', ')}`);
  const ca = u.searchParams.get('ca');
  if (ca !== null && !isAbsolute(ca)) bad(`ca ${ca} must be an absolute path`);

  return {
    kind: 'syslog',
    transport: t,
    host,
    port,
    format: format as SyslogFormat,
    facility: facility as number,
    ...(ca ? { ca } : {}),
    url,
  };
}
