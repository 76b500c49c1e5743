import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  type AuditEvent,
  createEventExporter,
  type EventExporter,
  type SecurityEvent,
  SiemError,
} from './index.js';

x509.cryptoProvider.set(webcrypto as unknown as ReturnType<typeof x509.cryptoProvider.get>);

// --- a small RFC 5424 / CEF reader, independent of the code under test ---

interface Syslog {
  pri: number;
  version: number;
  timestamp: string;
  hostname: string;
  app: string;
  procId: string;
  msgId: string;
  sdId: string;
  sd: Record<string, string>;
  msg: string;
}

function parse5424(line: string): Syslog {
  const m = /^<(\d{1,3})>(\d+) (\S+) (\S+) (\S+) (\S+) (\S+) /.exec(line);
  if (!m) throw new Error(`not RFC 5424: ${line}`);
  let i = m[0].length;
  const sd: Record<string, string> = {};
  let sdId = '-';
  if (line[i] === '-') {
    i++;
  } else {
    if (line[i] !== '[') throw new Error(`no SD at ${i}: ${line}`);
    const idEnd = line.slice(i).search(/[ \]]/) + i;
    sdId = line.slice(i + 1, idEnd);
    i = idEnd;
    while (line[i] === ' ') {
      const eq = line.indexOf('="', i);
      const name = line.slice(i + 1, eq);
      let value = '';
      i = eq + 2;
      while (line[i] !== '"') {
        if (line[i] === '\\' && '"\\]'.includes(line[i + 1]!)) i++;
        value += line[i++];
        if (i >= line.length) throw new Error('unterminated SD value');
      }
      sd[name] = value;
      i++;
    }
    if (line[i] !== ']') throw new Error(`SD not closed at ${i}: ${line}`);
    i++;
  }
  if (line[i] !== ' ') throw new Error('no space before MSG');
  return {
    pri: Number(m[1]),
    version: Number(m[2]),
    timestamp: m[3]!,
    hostname: m[4]!,
    app: m[5]!,
    procId: m[6]!,
    msgId: m[7]!,
    sdId,
    sd,
    msg: line.slice(i + 1),
  };
}

function parseCef(s: string): { header: string[]; ext: Record<string, string> } {
  const header: string[] = [];
  let cur = '';
  let i = 0;
  while (header.length < 7) {
    if (s[i] === '\\') cur += s[++i];
    else if (s[i] === '|') {
      header.push(cur);
      cur = '';
    } else cur += s[i];
    i++;
  }
  const ext: Record<string, string> = {};
  const rest = s.slice(i);
  // Keys start after a space (or at the start) and end at the first unescaped '='.
  const keyAt = [...rest.matchAll(/(?:^| )([A-Za-z0-9]+)=/g)].filter(
    (k) => rest[k.index + k[0].length - 2] !== '\\',
  );
  keyAt.forEach((k, n) => {
    const start = k.index + k[0].length;
    const end = n + 1 < keyAt.length ? keyAt[n + 1]!.index : rest.length;
    ext[k[1]!] = rest
      .slice(start, end)
      .replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
  });
  return { header, ext };
}

// --- listeners on 127.0.0.1:0 ---

interface Listener {
  port: number;
  messages: Syslog[];
  connections: number;
  sockets: Set<Socket>;
  close(): Promise<void>;
}

const open: Array<{ close(): Promise<void> }> = [];
const exporters: EventExporter[] = [];

async function udpListener(): Promise<Listener> {
  const sock: UdpSocket = createSocket('udp4');
  const l: Listener = {
    port: 0,
    messages: [],
    connections: 0,
    sockets: new Set(),
    close: () => new Promise((r) => sock.close(() => r())),
  };
  sock.on('message', (b) => l.messages.push(parse5424(b.toString('utf8'))));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  l.port = sock.address().port;
  open.push(l);
  return l;
}

/** Reads RFC 6587 octet-counted frames from a byte stream. */
function octetReader(onMessage: (m: string) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const sp = buf.indexOf(0x20);
      if (sp < 0) return;
      const len = Number(buf.subarray(0, sp).toString());
      if (!Number.isInteger(len) || len <= 0)
        throw new Error(`bad frame length ${buf.subarray(0, sp)}`);
      if (buf.length < sp + 1 + len) return;
      onMessage(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
      buf = buf.subarray(sp + 1 + len);
    }
  };
}

async function streamListener(
  kind: 'tcp' | 'tls',
  tls?: { key: string; cert: string },
  port = 0,
): Promise<Listener> {
  const l: Listener = {
    port: 0,
    messages: [],
    connections: 0,
    sockets: new Set(),
    close: async () => {
      for (const s of l.sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  const onSocket = (s: Socket) => {
    l.connections++;
    l.sockets.add(s);
    s.on('close', () => l.sockets.delete(s));
    s.on('error', () => {});
    s.on(
      'data',
      octetReader((m) => l.messages.push(parse5424(m))),
    );
  };
  const server: Server =
    kind === 'tcp' ? createTcpServer(onSocket) : createTlsServer({ ...tls! }, onSocket);
  if (kind === 'tls') server.on('tlsClientError', () => {});
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  l.port = (server.address() as { port: number }).port;
  open.push(l);
  return l;
}

function exporter(...args: Parameters<typeof createEventExporter>): EventExporter {
  const e = createEventExporter(...args);
  exporters.push(e);
  return e;
}

afterEach(async () => {
  await Promise.all(exporters.splice(0).map((e) => e.close()));
  await Promise.all(open.splice(0).map((l) => l.close()));
});

const at = new Date('2026-05-04T03:02:01.123Z');
const denied = (over: Partial<Extract<SecurityEvent, { kind: 'flow' }>> = {}): SecurityEvent => ({
  kind: 'flow',
  at,
  verdict: 'denied',
  workload: 'db-1',
  direction: 'ingress',
  src: '10.0.0.5',
  dst: '10.0.0.9',
  protocol: 'tcp',
  port: 5432,
  ruleId: 'default-deny',
  connections: 1,
  ...over,
});
const audit = (n = 0): AuditEvent => ({
  kind: 'audit',
  at,
  actor: 'alice',
  action: 'policy.update',
  target: `policy/${n}`,
  details: { n },
});

/** Everything sent before an audit sentinel has arrived once the sentinel has (one ordered stream). */
async function sync(e: EventExporter, l: Listener): Promise<void> {
  e.emit({ ...audit(), target: 'sentinel' });
  await e.flush();
  await vi.waitFor(() => expect(l.messages.some((m) => m.sd.target === 'sentinel')).toBe(true));
  l.messages.splice(
    l.messages.findIndex((m) => m.sd.target === 'sentinel'),
    1,
  );
}

describe('EventExporter over syslog', () => {
  it('sends CEF over UDP with RFC 5424 header, structured data and severities', async () => {
    const l = await udpListener();
    const e = exporter([`syslog+udp://127.0.0.1:${l.port}?format=cef&facility=local3`], {
      hostname: 'cp-test',
      aggregateWindowMs: 0,
    });
    e.emit(denied({ srcWorkload: 'web-1' }));
    e.emit(denied({ verdict: 'would-deny', direction: 'egress' }));
    e.emit(audit(1));
    await sync(e, l);

    expect(l.messages.map((m) => m.msgId)).toEqual(['FLOW_DENIED', 'FLOW_WOULD_DENY', 'AUDIT']);
    // local3 = 19: warning 4, notice 5, info 6.
    expect(l.messages.map((m) => m.pri)).toEqual([19 * 8 + 4, 19 * 8 + 5, 19 * 8 + 6]);
    const [d, w, a] = l.messages;
    expect(d).toMatchObject({
      version: 1,
      timestamp: '2026-05-04T03:02:01.123Z',
      hostname: 'cp-test',
      app: 'bulkhead',
      procId: String(process.pid),
      sdId: 'bulkhead@32473',
    });
    expect(d!.sd).toMatchObject({
      verdict: 'denied',
      src: '10.0.0.5',
      port: '5432',
      rule: 'default-deny',
    });
    const cef = parseCef(d!.msg);
    expect(cef.header).toEqual([
      'CEF:0',
      'Bulkhead',
      'Bulkhead',
      expect.stringMatching(/^\d+\.\d+\.\d+/),
      'FLOW_DENIED',
      'Flow denied',
      '7',
    ]);
    expect(cef.ext).toMatchObject({
      src: '10.0.0.5',
      dst: '10.0.0.9',
      dpt: '5432',
      proto: 'tcp',
      act: 'denied',
      cnt: '1',
      cs1Label: 'rule',
      cs1: 'default-deny',
      cs2Label: 'workload',
      cs2: 'db-1',
      cs4Label: 'srcWorkload',
      cs4: 'web-1',
      rt: String(at.getTime()),
    });
    expect(parseCef(w!.msg).ext).toMatchObject({ act: 'would-deny', deviceDirection: '1' });
    expect(parseCef(a!.msg).ext).toMatchObject({
      suser: 'alice',
      act: 'policy.update',
      cs1: 'policy/1',
      msg: '{"n":1}',
    });
    expect(e.stats().targets[0]).toMatchObject({ sent: 4, rateLimited: 0, queueDropped: 0 });
  });

  it('sends JSON over TCP with octet-counting framing, escaping hostile values', async () => {
    const l = await streamListener('tcp');
    const e = exporter([`syslog+tcp://127.0.0.1:${l.port}?format=json`], { aggregateWindowMs: 0 });
    const nasty = 'x"] [evil@1 a="b\\\nsecond line';
    e.emit({ ...audit(2), actor: nasty });
    e.emit(denied({ src: 'fd00::5', dst: 'fd00::9' }));
    await sync(e, l);

    expect(l.messages).toHaveLength(2);
    expect(l.messages[0]!.sd.actor).toBe(nasty);
    expect(JSON.parse(l.messages[0]!.msg)).toMatchObject({
      kind: 'audit',
      actor: nasty,
      action: 'policy.update',
      details: { n: 2 },
      at: at.toISOString(),
    });
    expect(JSON.parse(l.messages[1]!.msg)).toMatchObject({
      kind: 'flow',
      verdict: 'denied',
      src: 'fd00::5',
      port: 5432,
      ports: [5432],
      portCount: 1,
    });
  });

  it('aggregates a 1000-port scan from one source into one event', async () => {
    const l = await udpListener();
    const e = exporter([`syslog+udp://127.0.0.1:${l.port}?format=json`]);
    for (let p = 1; p <= 1000; p++) e.emit(denied({ port: p }));
    await sync(e, l);

    expect(l.messages.map((m) => m.msgId)).toEqual(['FLOW_DENIED']);
    const scan = JSON.parse(l.messages[0]!.msg);
    expect(scan).toMatchObject({ connections: 1000, events: 1000, portCount: 1000 });
    expect(scan.ports).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(e.stats()).toMatchObject({ received: 1001, aggregated: 999 });
    expect(e.stats().targets[0]!.rateLimited).toBe(0);
  });

  it('rate limits a flood of distinct flows and reports the suppressed count in the stream', async () => {
    const l = await streamListener('tcp');
    const e = exporter([`syslog+tcp://127.0.0.1:${l.port}?format=cef`], {
      rateLimit: { perSecond: 1, burst: 20 },
      maxAggregateKeys: 100,
    });
    for (let i = 0; i < 1000; i++) e.emit(denied({ src: `10.1.${i >> 8}.${i & 255}`, port: 22 }));
    e.emit(audit(9));
    await e.flush();

    await vi.waitFor(() => expect(l.messages.some((m) => m.msgId === 'RATE_LIMITED')).toBe(true));
    const flows = l.messages.filter((m) => m.msgId === 'FLOW_DENIED');
    const reports = l.messages.filter((m) => m.msgId === 'RATE_LIMITED');
    const suppressed = reports.reduce((n, r) => n + Number(r.sd.rateLimited), 0);
    const audits = l.messages.filter((m) => m.msgId === 'AUDIT').length;
    expect(flows.length).toBeGreaterThanOrEqual(20);
    expect(flows.length + audits + suppressed).toBe(1001);
    expect(e.stats().targets[0]!.rateLimited).toBe(suppressed);
    expect(parseCef(reports[0]!.msg).ext.msg).toMatch(/^\d+ events suppressed in the last window/);
    expect(reports[0]!.pri % 8).toBe(4);
  });

  it('never aggregates audit events, but rate limits and reports them', async () => {
    const l = await streamListener('tcp');
    const e = exporter([`syslog+tcp://127.0.0.1:${l.port}`], {
      rateLimit: { perSecond: 1, burst: 10 },
    });
    for (let i = 0; i < 50; i++) e.emit(audit(i));
    await e.flush();
    await vi.waitFor(() => expect(l.messages.some((m) => m.msgId === 'RATE_LIMITED')).toBe(true));
    const audits = l.messages.filter((m) => m.msgId === 'AUDIT');
    expect(new Set(audits.map((m) => m.sd.target)).size).toBe(audits.length);
    const report = l.messages.find((m) => m.msgId === 'RATE_LIMITED')!;
    expect(audits.length + Number(report.sd.suppressed)).toBe(50);
  });

  it('reconnects over TCP after the server drops the connection', async () => {
    const l = await streamListener('tcp');
    const logs: string[] = [];
    const logger = {
      warn: (_: object, m?: string) => logs.push(`warn ${m}`),
      info: (_: object, m?: string) => logs.push(`info ${m}`),
    };
    const e = exporter([`syslog+tcp://127.0.0.1:${l.port}`], { aggregateWindowMs: 0, logger });
    e.emit(audit(1));
    await vi.waitFor(() => expect(l.messages).toHaveLength(1));
    for (const s of l.sockets) s.destroy();
    await vi.waitFor(() => expect(e.stats().targets[0]!.connected).toBe(false));
    e.emit(audit(2));
    await vi.waitFor(() => expect(l.messages.map((m) => m.sd.target)).toContain('policy/2'), {
      timeout: 10_000,
    });
    // policy/1 was not confirmed when its connection died: sent again, before policy/2.
    expect(l.messages.map((m) => m.sd.target)).toEqual(['policy/1', 'policy/1', 'policy/2']);
    expect(e.stats().targets[0]!.resent).toBe(1);
    expect(l.connections).toBe(2);
    expect(logs).toEqual(['warn SIEM target unreachable', 'info SIEM target reachable again']);
    expect(e.stats().targets[0]!.errors).toBeGreaterThan(0);
  });

  it('never blocks on a dead target, drops oldest from its queue and reports that when it is back', async () => {
    const probe = await streamListener('tcp');
    const port = probe.port;
    await probe.close();
    open.splice(open.indexOf(probe), 1);

    const e = exporter([`syslog+tcp://127.0.0.1:${port}?format=json`], {
      rateLimit: false,
      queueSize: 10,
    });
    for (let i = 0; i < 100; i++) e.emit(audit(i));
    const s = e.stats().targets[0]!;
    expect(s).toMatchObject({ queued: 10, queueDropped: 90, connected: false });
    await vi.waitFor(() => expect(e.stats().targets[0]!.errors).toBeGreaterThan(0));
    await e.flush(); // resolves although nothing can be delivered

    const l = await streamListener('tcp', undefined, port);
    await vi.waitFor(() => expect(l.messages.length).toBeGreaterThanOrEqual(10), {
      timeout: 15_000,
    });
    // The newest ten survived, in order.
    expect(l.messages.slice(0, 10).map((m) => m.sd.target)).toEqual(
      Array.from({ length: 10 }, (_, i) => `policy/${90 + i}`),
    );
    await e.flush();
    await vi.waitFor(() => expect(l.messages.some((m) => m.msgId === 'RATE_LIMITED')).toBe(true));
    const report = l.messages.find((m) => m.msgId === 'RATE_LIMITED')!;
    expect(report.sd).toMatchObject({ queueDropped: '90', rateLimited: '0', suppressed: '90' });
    expect(JSON.parse(report.msg)).toMatchObject({ kind: 'suppressed', queueDropped: 90 });
  });
});

describe('EventExporter over TLS', () => {
  let pki: { caPem: string; key: string; cert: string; otherCaPem: string };
  let dir: string;

  beforeAll(async () => {
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
    const keys = () => webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const notBefore = new Date(Date.now() - 60_000);
    const notAfter = new Date(Date.now() + 86_400_000);
    const makeCa = async (name: string) => {
      const k = await keys();
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: '01',
        name,
        notBefore,
        notAfter,
        signingAlgorithm: alg,
        keys: k,
        extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
      });
      return { k, cert };
    };
    const ca = await makeCa('CN=Test SIEM CA');
    const other = await makeCa('CN=Some Other CA');
    const serverKeys = await keys();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '02',
      subject: 'CN=siem.test',
      issuer: ca.cert.subject,
      notBefore,
      notAfter,
      signingAlgorithm: alg,
      publicKey: serverKeys.publicKey,
      signingKey: ca.k.privateKey,
      extensions: [
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }]),
      ],
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', serverKeys.privateKey));
    pki = {
      caPem: ca.cert.toString('pem'),
      otherCaPem: other.cert.toString('pem'),
      cert: cert.toString('pem'),
      key: `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64')}\n-----END PRIVATE KEY-----\n`,
    };
    dir = mkdtempSync(join(tmpdir(), 'bh-siem-tls-'));
    writeFileSync(join(dir, 'ca.pem'), pki.caPem);
    writeFileSync(join(dir, 'other.pem'), pki.otherCaPem);
    return () => rmSync(dir, { recursive: true, force: true });
  });

  it('delivers over TLS to a server whose certificate chains to the given CA', async () => {
    const l = await streamListener('tls', { key: pki.key, cert: pki.cert });
    const e = exporter([`syslog+tls://127.0.0.1:${l.port}?format=cef&ca=${join(dir, 'ca.pem')}`]);
    e.emit(audit(3));
    await sync(e, l);
    expect(l.messages).toHaveLength(1);
    expect(parseCef(l.messages[0]!.msg).ext).toMatchObject({ suser: 'alice', cs1: 'policy/3' });
  });

  it('refuses a server certificate from another CA and delivers nothing', async () => {
    const l = await streamListener('tls', { key: pki.key, cert: pki.cert });
    const e = exporter([`syslog+tls://127.0.0.1:${l.port}?ca=${join(dir, 'other.pem')}`]);
    e.emit(audit(4));
    await vi.waitFor(() => expect(e.stats().targets[0]!.errors).toBeGreaterThan(0));
    await e.flush();
    expect(l.messages).toEqual([]);
    expect(e.stats().targets[0]).toMatchObject({ sent: 0, connected: false, queued: 1 });
  });

  it('rejects an unreadable CA file when created', () => {
    expect(() =>
      createEventExporter([`syslog+tls://127.0.0.1:1?ca=${join(dir, 'nope.pem')}`]),
    ).toThrow(/ca .*nope\.pem is not readable/);
  });
});

describe('EventExporter to a file', () => {
  it('appends one JSON object per line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bh-siem-file-'));
    try {
      const path = join(dir, 'events.jsonl');
      writeFileSync(path, '{"kept":true}\n');
      const e = createEventExporter([`file://${path}`], { hostname: 'cp-file' });
      e.emit(audit(5));
      e.emit(denied({ port: 1 }));
      e.emit(denied({ port: 2, connections: 4 }));
      await e.close();
      const lines = readFileSync(path, 'utf8')
        .trimEnd()
        .split('\n')
        .map((x) => JSON.parse(x));
      expect(lines).toHaveLength(3);
      expect(lines[0]).toEqual({ kept: true });
      expect(lines[1]).toMatchObject({ host: 'cp-file', msgId: 'AUDIT', target: 'policy/5' });
      expect(lines[2]).toMatchObject({
        msgId: 'FLOW_DENIED',
        connections: 5,
        ports: [1, 2],
        portCount: 2,
        events: 2,
      });
      expect(e.stats().targets[0]!.sent).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes to a new file after the old one is renamed away, noticed alone and on reopen()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bh-siem-rotate-'));
    try {
      const path = join(dir, 'events.jsonl');
      const e = exporter([`file://${path}`], { aggregateWindowMs: 0 });
      const targets = (file: string) =>
        readFileSync(file, 'utf8')
          .trimEnd()
          .split('\n')
          .map((x) => JSON.parse(x).target);
      e.emit(audit(1));
      await vi.waitFor(() => expect(targets(path)).toEqual(['policy/1']));

      renameSync(path, `${path}.1`);
      // The inode check (every second) notices the rename without being told.
      await vi.waitFor(() => expect(existsSync(path)).toBe(true), { timeout: 5_000 });
      e.emit(audit(2));
      await vi.waitFor(() => expect(targets(path)).toEqual(['policy/2']));

      renameSync(path, `${path}.2`);
      e.reopen(); // what SIGHUP does
      e.emit(audit(3));
      await vi.waitFor(() => expect(targets(path)).toEqual(['policy/3']));
      expect(targets(`${path}.1`)).toEqual(['policy/1']);
      expect(targets(`${path}.2`)).toEqual(['policy/2']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('EventExporter with an on-disk spool', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bh-siem-spool-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const targetsOf = (l: Listener) => l.messages.map((m) => m.sd.target);

  it('loses nothing while the syslog listener is stopped and restarted (duplicates allowed)', async () => {
    let l = await streamListener('tcp');
    const port = l.port;
    const e = exporter([`syslog+tcp://127.0.0.1:${port}`], {
      aggregateWindowMs: 0,
      rateLimit: false,
      spoolDir: dir,
    });
    for (let i = 0; i < 20; i++) e.emit(audit(i));
    await vi.waitFor(() => expect(l.messages).toHaveLength(20));
    const before = targetsOf(l);

    await l.close();
    open.splice(open.indexOf(l), 1);
    // Written at once, before the client has seen the close: at most once would lose these.
    for (let i = 20; i < 60; i++) e.emit(audit(i));
    await vi.waitFor(() => expect(e.stats().targets[0]!.connected).toBe(false));
    expect(e.stats().targets[0]!.spoolBytes).toBeGreaterThan(0);

    l = await streamListener('tcp', undefined, port);
    for (let i = 60; i < 80; i++) e.emit(audit(i));
    await vi.waitFor(() => expect(new Set([...before, ...targetsOf(l)]).size).toBe(80), {
      timeout: 15_000,
    });
    // Each connection gets the messages in order; the new one starts with the unconfirmed.
    const after = targetsOf(l).map((t) => Number(t!.split('/')[1]));
    expect(after).toEqual([...after].sort((a, b) => a - b));
    expect(after.at(-1)).toBe(79);
    expect(e.stats().targets[0]).toMatchObject({ queueDropped: 0 });
  });

  it('keeps the spool across a restart and delivers it when the target is back', async () => {
    const probe = await streamListener('tcp');
    const port = probe.port;
    await probe.close();
    open.splice(open.indexOf(probe), 1);
    const url = `syslog+tcp://127.0.0.1:${port}`;
    const first = createEventExporter([url], { aggregateWindowMs: 0, spoolDir: dir });
    for (let i = 0; i < 5; i++) first.emit(audit(i));
    await first.close();

    const l = await streamListener('tcp', undefined, port);
    exporter([url], { aggregateWindowMs: 0, spoolDir: dir });
    await vi.waitFor(
      () => expect(targetsOf(l)).toEqual([0, 1, 2, 3, 4].map((i) => `policy/${i}`)),
      {
        timeout: 10_000,
      },
    );
  });

  it('bounds the spool, drops the oldest and counts them, and reports it when back', async () => {
    const probe = await streamListener('tcp');
    const port = probe.port;
    await probe.close();
    open.splice(open.indexOf(probe), 1);
    const max = 16 * 1024;
    const e = exporter([`syslog+tcp://127.0.0.1:${port}?format=json`], {
      aggregateWindowMs: 0,
      rateLimit: false,
      spoolDir: dir,
      spoolMaxBytes: max,
    });
    for (let i = 0; i < 500; i++) e.emit(audit(i));
    const s = e.stats().targets[0]!;
    expect(s.spoolBytes).toBeLessThanOrEqual(max);
    expect(s.queueDropped).toBeGreaterThan(0);
    expect(s.queued + s.queueDropped).toBe(500);

    const l = await streamListener('tcp', undefined, port);
    await vi.waitFor(() => expect(l.messages).toHaveLength(s.queued), { timeout: 15_000 });
    // The newest survived, in order.
    expect(targetsOf(l).at(-1)).toBe('policy/499');
    expect(targetsOf(l)[0]).toBe(`policy/${s.queueDropped}`);
    await e.flush();
    await vi.waitFor(() => expect(l.messages.some((m) => m.msgId === 'RATE_LIMITED')).toBe(true));
    const report = l.messages.find((m) => m.msgId === 'RATE_LIMITED')!;
    expect(report.sd.queueDropped).toBe(String(s.queueDropped));
  });
});

describe('createEventExporter', () => {
  it('takes a pino logger', async () => {
    const e = createEventExporter([], { logger: pino({ level: 'silent' }) });
    await e.close();
    expect(e.stats().targets).toEqual([]);
  });

  it('rejects a bad target before opening anything', () => {
    expect(() =>
      createEventExporter(['file:///tmp/ok.jsonl', 'syslog+udp://siem:514?format=leef']),
    ).toThrow(SiemError);
  });

  it('refuses malformed events and events after close without throwing', async () => {
    const e = createEventExporter([], {});
    e.emit({ ...audit(), at: new Date('nope') });
    e.emit(null as unknown as SecurityEvent);
    await e.close();
    e.emit(audit());
    expect(e.stats()).toMatchObject({ received: 0, rejected: 3 });
  });
});
