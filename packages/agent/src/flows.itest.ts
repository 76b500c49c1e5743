// Real nftables and real packets: run inside a throwaway network namespace (scripts/test.sh
// uses unshare --net). A peer namespace on the far end of a veth pair sends the ingress
// traffic; this namespace sends the egress traffic. No address outside these two is used.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNftDriver, type NftDriver, Transaction } from '@bulkhead/nftables';
import {
  Action,
  Direction,
  type FlowRecord,
  Mode,
  type PolicyUpdate,
  Verdict,
} from '@bulkhead/proto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataplane } from './dataplane.js';
import { fullUpdate } from './fixture.test-util.js';
import { FLOW_TABLE_FULL } from './flow-buffer.js';

const IN = Direction.DIRECTION_INGRESS;
const OUT = Direction.DIRECTION_EGRESS;
const PEER_NS = `bhflow${process.pid}`;
const DEV = 'bhflow0';
const HERE4 = '10.3.0.1';
const PEER4 = '10.3.0.2';
const HERE6 = 'fd03::1';
const PEER6 = 'fd03::2';

function run(cmd: string, ...args: string[]): void {
  execFileSync(cmd, args, { stdio: 'ignore' });
}

/** SYNs the kernel of network namespace `ns` sent again (TcpExt TCPSynRetrans). */
function synRetransmits(ns: string): number {
  const text = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/netstat'], {
    encoding: 'utf8',
  });
  const [names, values] = text
    .split('\n')
    .filter((l) => l.startsWith('TcpExt:'))
    .map((l) => l.split(/\s+/));
  const i = names?.indexOf('TCPSynRetrans') ?? -1;
  if (i < 1) throw new Error('no TCPSynRetrans in /proc/net/netstat');
  return Number(values![i]);
}

// Sends one TCP connect or UDP datagram from wherever it runs (here: the peer namespace).
const SENDER = `
const [kind, host, port] = process.argv.slice(2);
if (kind === 'tcpuntil') {
  // Connections one after the other (each opened and closed) until stdin closes; then the
  // number made goes to stdout.
  let made = 0;
  let stop = false;
  process.stdin.on('data', () => undefined).on('end', () => { stop = true; });
  const next = () => {
    if (stop) return process.stdout.write(String(made), () => process.exit(0));
    const s = require('node:net').connect({ host, port: Number(port) });
    s.on('connect', () => { made++; s.end(); });
    s.on('close', next);
    s.on('error', () => undefined);
  };
  next();
} else if (kind === 'tcp') {
  const s = require('node:net').connect({ host, port: Number(port) });
  const done = () => { s.destroy(); process.exit(0); };
  s.on('connect', done); s.on('error', done); setTimeout(done, 2000);
} else {
  const s = require('node:dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.send('x', Number(port), host, () => { s.close(); });
}
`;

/** ICMP/ICMPv6 echo request through a raw socket (perl-base is in every Debian). */
function icmpEcho(address: string): void {
  const v6 = address.includes(':');
  const script = v6
    ? 'socket(S,PF_INET6,SOCK_RAW,58) or die; send(S,"\\x80\\0\\0\\0\\0\\0\\0\\0",0,pack_sockaddr_in6(0,inet_pton(AF_INET6,$ARGV[0])))'
    : 'socket(S,PF_INET,SOCK_RAW,1) or die; send(S,"\\x08\\0\\xf7\\xff\\0\\0\\0\\0",0,pack_sockaddr_in(0,inet_aton($ARGV[0])))';
  // Enforce mode drops it in the output hook (send fails with EPERM): recorded all the same.
  spawnSync('perl', ['-MSocket=:all', '-e', script, address], { stdio: 'ignore' });
}

async function udpFromHere(address: string, port: number): Promise<void> {
  const sock = createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => sock.send('x', port, address, () => resolve()));
  sock.close();
}

async function tcpFromHere(address: string, port: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const s = connect({ host: address, port });
    const done = () => {
      s.destroy();
      resolve();
    };
    s.on('connect', done);
    s.on('error', done);
    setTimeout(done, 2000);
  });
}

function rule(
  id: string,
  direction: Direction,
  action: Action,
  groups: string[],
  services: [number, number][],
) {
  return {
    id,
    direction,
    action,
    policy: 'p',
    groups,
    services: services.map(([protocol, port]) => ({ protocol, portFrom: port, portTo: port })),
  };
}

/** Ingress in monitor (traffic flows), egress in enforce (denies drop). */
function update(revision: number): PolicyUpdate {
  const host = (a: string) => [{ from: a, to: a }];
  return fullUpdate(
    {
      ruleSet: {
        workloadId: 'flow-host',
        revision,
        hash: '',
        ingressMode: Mode.MODE_MONITOR,
        egressMode: Mode.MODE_ENFORCE,
        rules: [
          rule('in/allow-web', IN, Action.ACTION_ALLOW, ['peer4'], [[6, 8080]]),
          rule(
            'out/deny-syslog',
            OUT,
            Action.ACTION_DENY,
            ['peer4', 'peer6'],
            [
              [17, 9999],
              [6, 7000],
            ],
          ),
          rule('in/deny-mdns', IN, Action.ACTION_DENY, ['peer6'], [[17, 5353]]),
        ],
      },
      groups: new Map([
        ['peer4', host(PEER4)],
        ['peer6', host(PEER6)],
      ]),
    },
    `flows-${revision}`,
    revision,
  );
}

type Key = [Direction, string, string, number, number, string, Verdict];
const keyOf = (f: FlowRecord): Key => [
  f.direction,
  f.src,
  f.dst,
  f.protocol,
  f.port,
  f.ruleId,
  f.verdict,
];
const byKey = (a: Key, b: Key) => JSON.stringify(a).localeCompare(JSON.stringify(b));
// The kernel sends traffic of its own, e.g. MLD reports to ff02::16 when a device comes up:
// the rules see (and record) that too. Only flows with the peer are this test's.
const PEERS = new Set([PEER4, PEER6]);
const withPeer = (flows: FlowRecord[]) => flows.filter((f) => PEERS.has(f.src) || PEERS.has(f.dst));

describe.each(['libnftables', 'nft'] as const)(
  'flow discovery on real nftables (%s)',
  (backend) => {
    let driver: NftDriver;
    let stateDir: string;
    let sender: string;
    const logger = pino({ level: 'silent' });

    function fromPeer(kind: 'tcp' | 'udp', host: string, port: number): void {
      run('ip', 'netns', 'exec', PEER_NS, process.execPath, sender, kind, host, String(port));
    }

    async function setElements(name: string): Promise<number> {
      const [s] = await driver.list({
        list: { set: { family: 'inet', table: 'bulkhead', name } },
      });
      return ((s?.set as { elem?: unknown[] } | undefined)?.elem ?? []).length;
    }

    beforeAll(async () => {
      driver = createNftDriver({ backend });
      stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-flows-'));
      sender = join(stateDir, 'send.cjs');
      await writeFile(sender, SENDER);
      run('ip', 'netns', 'add', PEER_NS);
      run('ip', 'link', 'add', DEV, 'type', 'veth', 'peer', 'name', `${DEV}p`, 'netns', PEER_NS);
      run('ip', 'addr', 'add', `${HERE4}/24`, 'dev', DEV);
      run('ip', '-6', 'addr', 'add', `${HERE6}/64`, 'dev', DEV, 'nodad');
      run('ip', 'link', 'set', DEV, 'up');
      const peer = (...args: string[]) => run('ip', '-n', PEER_NS, ...args);
      peer('addr', 'add', `${PEER4}/24`, 'dev', `${DEV}p`);
      peer('-6', 'addr', 'add', `${PEER6}/64`, 'dev', `${DEV}p`, 'nodad');
      peer('link', 'set', `${DEV}p`, 'up');
      peer('link', 'set', 'lo', 'up');
    });

    afterAll(async () => {
      try {
        run('ip', 'link', 'del', DEV);
      } catch {
        // gone with the namespace
      }
      try {
        run('ip', 'netns', 'del', PEER_NS);
      } catch {
        // never created
      }
      await driver
        ?.apply(new Transaction().delete({ table: { family: 'inet', name: 'bulkhead' } }))
        .catch(() => undefined);
      driver?.close();
      await rm(stateDir, { recursive: true, force: true });
    });

    it('records real TCP, UDP and ICMP connections, IPv4 and IPv6, with the deciding rule; drains', async () => {
      const dp = createDataplane({
        driver,
        stateDir,
        failsafe: { controlPlane: [], admin: undefined },
        logger,
      });
      expect((await dp.apply(update(1))).ok).toBe(true);

      fromPeer('tcp', HERE4, 8080); // in4, rule 0 allow
      fromPeer('udp', HERE6, 5353); // in6, rule 2 deny -> would-deny (ingress monitor)
      fromPeer('udp', HERE4, 4000); // in4, default -> would-deny
      await udpFromHere(PEER4, 9999); // out4, rule 1 deny -> denied (egress enforce)
      await tcpFromHere(PEER6, 7000); // out6, rule 1 deny -> denied
      icmpEcho(PEER4); // out4, default, no port
      icmpEcho(PEER6); // out6, default, no port

      await dp.collect();
      const { flows, events } = dp.flows.take(Date.now());
      expect(events).toEqual([]);
      expect(withPeer(flows).map(keyOf).sort(byKey)).toEqual(
        (
          [
            [IN, PEER4, HERE4, 6, 8080, 'in/allow-web', Verdict.VERDICT_ALLOWED],
            [IN, PEER6, HERE6, 17, 5353, 'in/deny-mdns', Verdict.VERDICT_WOULD_DENY],
            [IN, PEER4, HERE4, 17, 4000, 'default', Verdict.VERDICT_WOULD_DENY],
            [OUT, HERE4, PEER4, 17, 9999, 'out/deny-syslog', Verdict.VERDICT_DENIED],
            [OUT, HERE6, PEER6, 6, 7000, 'out/deny-syslog', Verdict.VERDICT_DENIED],
            [OUT, HERE4, PEER4, 1, 0, 'default', Verdict.VERDICT_DENIED],
            [OUT, HERE6, PEER6, 58, 0, 'default', Verdict.VERDICT_DENIED],
          ] as Key[]
        ).sort(byKey),
      );
      for (const f of flows) {
        expect(f.packets).toBeGreaterThanOrEqual(1);
        expect(f.bytes).toBeGreaterThan(0);
      }
      // Drained: the kernel sets are empty and the next read finds nothing.
      for (const name of ['flows_in4', 'flows_in6', 'flows_out4', 'flows_out6']) {
        expect(await setElements(name)).toBe(0);
      }
      await dp.collect();
      expect(withPeer(dp.flows.take(Date.now()).flows)).toEqual([]);

      // Recorded before an apply replaces the table: read first, not lost.
      fromPeer('udp', HERE4, 4001);
      expect((await dp.apply(update(2))).ok).toBe(true);
      await dp.collect();
      expect(withPeer(dp.flows.take(Date.now()).flows).map((f) => [f.port, f.ruleId])).toEqual([
        [4001, 'default'],
      ]);
    });

    it('a tiny flow set (size 2) fills, keeps deciding, and is reported as FLOW_TABLE_FULL', async () => {
      const dp = createDataplane({
        driver,
        stateDir,
        failsafe: { controlPlane: [], admin: undefined },
        logger,
        flowTable: { size: 2, timeoutSeconds: 60 },
      });
      expect((await dp.apply(update(3))).ok).toBe(true);
      for (const port of [5001, 5002, 5003, 5004]) fromPeer('udp', HERE4, port);
      // The verdict does not depend on room in the set: the default chain still counted all 4.
      const [counter] = await driver.list({
        list: { counter: { family: 'inet', table: 'bulkhead', name: 'in_default_would_deny' } },
      });
      expect(counter).toBeDefined();
      expect((counter!.counter as { packets: number }).packets).toBe(4);
      expect(await setElements('flows_in4')).toBe(2);

      await dp.collect();
      const { flows, events } = dp.flows.take(Date.now());
      expect(withPeer(flows)).toHaveLength(2);
      expect(events.filter((e) => e.attributes.set === 'flows_in4')).toEqual([
        expect.objectContaining({
          code: FLOW_TABLE_FULL,
          attributes: { set: 'flows_in4', entries: '2', size: '2' },
        }),
      ]);
      expect(await setElements('flows_in4')).toBe(0);
    });

    it('drained 10+ times while connections keep arriving, flows and counters sum to exactly the connections made', async () => {
      const dp = createDataplane({
        driver,
        stateDir,
        failsafe: { controlPlane: [], admin: undefined },
        logger,
      });
      expect((await dp.apply(update(4))).ok).toBe(true);
      await dp.collect();
      dp.flows.take(Date.now());
      let accepted = 0;
      const server = createServer((s) => {
        accepted++;
        s.on('error', () => undefined).end();
      });
      // A deep accept queue: this process is busy draining, and a full queue drops SYNs.
      await new Promise<void>((resolve) =>
        server.listen({ port: 8080, host: HERE4, backlog: 4096 }, resolve),
      );
      const retransmitsBefore = synRetransmits(PEER_NS);
      const child = spawn(
        'ip',
        ['netns', 'exec', PEER_NS, process.execPath, sender, 'tcpuntil', HERE4, '8080'],
        { stdio: ['pipe', 'pipe', 'ignore'] },
      );
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
      });
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      let flowPackets = 0;
      let counterPackets = 0;
      const drain = async () => {
        const counters = await dp.collect();
        for (const c of counters) if (c.ruleId === 'in/allow-web') counterPackets += c.packets;
        for (const f of withPeer(dp.flows.take(Date.now()).flows)) {
          if (f.ruleId === 'in/allow-web' && f.port === 8080) flowPackets += f.packets;
        }
      };
      try {
        for (let i = 0; i < 10 || accepted < 200; i++) await drain();
        child.stdin.end();
        expect(await exited).toBe(0);
        await drain();
      } finally {
        child.kill();
        server.close();
      }
      // One SYN per connection reached the rule chain, and one per SYN the peer sent again (a
      // busy machine may still drop some); the drains raced the packet path.
      const made = Number(out);
      const sent = made + synRetransmits(PEER_NS) - retransmitsBefore;
      expect(made).toBeGreaterThanOrEqual(200);
      expect(flowPackets).toBe(sent);
      expect(counterPackets).toBe(sent);
    }, 120_000);
  },
);
