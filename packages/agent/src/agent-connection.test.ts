// The agent's connection to a real gRPC server on 127.0.0.1 that is down, never answers, answers
// the way an old control plane did, or refuses: backoff, "connected", fatal refusals, and the
// state dir's modes. Random is injected (0.5: each delay is half its ceiling) so delays are exact.
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeNft, type FakeNft } from '@bulkhead/nftables/testing';
import { Mode } from '@bulkhead/proto';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type Agent, type AgentOptions, createAgent } from './agent.js';
import {
  startControlPlane,
  type TestControlPlane,
  testAgentOptions,
  until,
} from './control-plane.test-util.js';
import type { AgentError } from './errors.js';
import { fixtureUpdate } from './fixture.test-util.js';

interface LogLine {
  level: number;
  msg: string;
  to?: string;
  code?: string;
  details?: string;
  retryInMs?: number;
  err?: unknown;
}

const ERROR = 50;

describe('agent connection', () => {
  let cp: TestControlPlane;
  let stateDir: string;
  let kernel: FakeNft;
  let logs: LogLine[];
  const agents: Agent[] = [];

  beforeAll(async () => {
    cp = await startControlPlane();
    return () => cp.stop();
  });
  beforeEach(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'bulkhead-conn-'));
    kernel = createFakeNft();
    logs = [];
    cp.reset();
    await cp.start(); // a test may have stopped it; same port
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
    await cp.stop();
    await rm(stateDir, { recursive: true, force: true });
  });

  function agent(overrides: Partial<AgentOptions> = {}): Agent {
    const logger = pino(
      { level: 'debug' },
      { write: (line: string) => logs.push(JSON.parse(line) as LogLine) },
    );
    const a = createAgent(
      testAgentOptions(cp, {
        stateDir,
        kernel,
        logger,
        backoff: { baseMs: 20, capMs: 80, quickWindowMs: 40, random: () => 0.5 },
        ...overrides,
      }),
    );
    agents.push(a);
    return a;
  }

  const syncStates = (to: string) => logs.filter((l) => l.msg === 'sync state' && l.to === to);
  const connectedMetric = async (a: Agent) => {
    const text = await (await fetch(`http://127.0.0.1:${a.metricsAddress!.port}/metrics`)).text();
    return Number(/^bulkhead_control_plane_connected (\d)$/m.exec(text)?.[1]);
  };

  it('enrolment against a control plane that is down: delays grow to the cap, one line each', async () => {
    await cp.stop();
    const a = agent();
    await a.start();
    const failed = () => logs.filter((l) => l.msg === 'enrolment failed; retrying');
    await until(() => failed().length >= 5, '5 failed enrolments');
    expect(
      failed()
        .slice(0, 5)
        .map((l) => l.retryInMs),
    ).toEqual([10, 20, 40, 40, 40]);
    for (const l of failed()) {
      expect(l.err).toBeUndefined(); // no stack trace per attempt
      expect(l.details).toContain('UNAVAILABLE');
    }
    expect(await connectedMetric(a)).toBe(0);
  });

  it('Sync: connected only after the Welcome; backoff grows while down and resets after a real connection', async () => {
    const a = agent();
    await a.start();
    await until(() => syncStates('connected').length === 1, 'connected');
    expect(cp.of('hello')).toHaveLength(1);
    expect(await connectedMetric(a)).toBe(1);

    await cp.stop();
    await until(() => syncStates('backoff').length >= 7, '7 reconnect attempts');
    // After a working stream the attempts stay at the base for the quick window, then grow.
    expect(
      syncStates('backoff')
        .map((l) => l.retryInMs)
        .slice(0, 7),
    ).toEqual([10, 10, 10, 10, 20, 40, 40]);
    // Attempts against a dead port never count as connected (no flapping metric).
    expect(syncStates('connected')).toHaveLength(1);
    expect(await connectedMetric(a)).toBe(0);

    await cp.start();
    await until(() => syncStates('connected').length === 2, 'connected again');
    const before = syncStates('backoff').length;
    cp.streams.at(-1)!.end();
    await until(() => syncStates('backoff').length > before, 'backoff after the stream ended');
    expect(syncStates('backoff')[before]!.retryInMs).toBe(10);
  });

  it('a control plane that never answers the Hello: not connected, no telemetry; an update counts as its answer', async () => {
    cp.welcome = false;
    const a = agent();
    await a.start();
    await until(() => cp.of('hello').length === 1, 'hello');
    // Ten telemetry intervals: a connected agent would have sent batches by now.
    await new Promise((r) => setTimeout(r, 500));
    expect(syncStates('connected')).toHaveLength(0);
    expect(cp.of('telemetry')).toHaveLength(0);
    expect(await connectedMetric(a)).toBe(0);

    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_MONITOR, 4) });
    await until(() => cp.of('ack').length === 1 && cp.of('telemetry').length > 0, 'ack, telemetry');
    expect(syncStates('connected')).toHaveLength(1);
    expect(await connectedMetric(a)).toBe(1);
  });

  it.each([
    [status.INVALID_ARGUMENT, 'validation failed (labels.app: must be a label value)'],
    [status.UNAUTHENTICATED, 'unknown or expired bootstrap token'],
  ])(
    'a refused enrolment (status %i) is fatal after one attempt, with the server message',
    async (code, details) => {
      cp.enrollError = { code, details };
      let fatal: AgentError | undefined;
      const a = agent({ onFatal: (err) => (fatal = err) });
      await a.start();
      await until(() => fatal !== undefined, 'onFatal');
      expect(fatal).toMatchObject({ code: 'ENROLL_REFUSED' });
      expect(fatal!.message).toContain(details);
      expect(fatal!.message).toContain(status[code]);
      expect(cp.enrolls).toHaveLength(1);
      expect(logs.some((l) => l.msg === 'enrolment failed; retrying')).toBe(false);
    },
  );

  it('a refused Sync stream (revoked) keeps the rules and retries at the cap only', async () => {
    const a = agent();
    await a.start();
    await until(() => syncStates('connected').length === 1, 'connected');
    cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 5) });
    await until(() => cp.of('ack').length === 1, 'ack');
    const table = kernel.dump();

    cp.syncError = { code: status.UNAUTHENTICATED, details: 'agent is revoked' };
    cp.streams[0]!.emit('error', { code: status.UNAUTHENTICATED, details: 'agent is revoked' });
    await until(() => syncStates('backoff').length >= 3, '3 refused attempts');
    for (const l of syncStates('backoff').slice(0, 3)) {
      expect(l).toMatchObject({
        level: ERROR,
        code: 'UNAUTHENTICATED',
        details: 'agent is revoked',
      });
      expect(l.retryInMs).toBe(40); // half the cap, never the base
    }
    expect(kernel.dump()).toEqual(table);
    expect(a.dataplane.applied?.revision).toBe(5);
    expect(await connectedMetric(a)).toBe(0);
  });

  it('the state dir is 0700 and every file in it 0600, whatever the umask', async () => {
    // Left behind by an older agent with wider modes.
    await mkdir(stateDir, { recursive: true });
    await chmod(stateDir, 0o755);
    await writeFile(join(stateDir, 'telemetry-seq'), '3\n', { mode: 0o644 });
    const old = process.umask(0o022);
    try {
      const a = agent();
      await a.start();
      await until(() => syncStates('connected').length === 1, 'connected');
      cp.streams[0]!.write({ update: fixtureUpdate(Mode.MODE_ENFORCE, 6) });
      await until(() => cp.of('ack').length === 1 && cp.of('telemetry').length > 0, 'ack, seq');
      await a.stop();
    } finally {
      process.umask(old);
    }
    expect((await stat(stateDir)).mode & 0o777).toBe(0o700);
    const files = (await readdir(stateDir)).sort();
    expect(files).toEqual([
      'agent-id',
      'agent.crt',
      'agent.key',
      'ca.crt',
      'dataplane.json',
      'policy.bin',
      'telemetry-seq',
    ]);
    for (const f of files) {
      expect({ f, mode: (await stat(join(stateDir, f))).mode & 0o777 }).toEqual({ f, mode: 0o600 });
    }
  });
});
