#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { ConfigError, parseSettings, settingSource } from '@bulkhead/config';
import { createNftDriver } from '@bulkhead/nftables';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { pino } from 'pino';
import { AGENT_VERSION, type AgentOptions, createAgent, parseHostPort } from './agent.js';
import { bootRestore } from './boot.js';
import type { RestoreOutcome } from './dataplane.js';
import { parseControlPlanes } from './endpoints.js';
import { DEFAULT_SERVER_NAME } from './enroll.js';
import { AgentError } from './errors.js';
import { DEFAULT_MAX_PENDING_FLOWS } from './flow-buffer.js';
import { DEFAULT_FLOW_TABLE, parseCidr } from './render.js';
import { DEFAULT_BACKOFF } from './retry.js';
import { DEFAULT_KEEPALIVE } from './sync.js';

const EXIT_USAGE = 2;

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function fail(message: string): never {
  process.stderr.write(`bulkhead-agent: ${message}\n`);
  process.exit(EXIT_USAGE);
}

function intIn(flag: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag} must be an integer in ${min}..${max}`);
    }
    return n;
  };
}

function readFlagFile(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    return fail(`${flag}: cannot read ${path}: ${(err as Error).message}`);
  }
}

function defaultAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((a) => a !== undefined && !a.internal)
    .map((a) => a!.address);
}

// Flags the boot loader (--restore-only) shares with the agent.
const stateDirOption = () =>
  new Option('--state-dir <dir>', 'identity and last rule set').default('/var/lib/bulkhead-agent');
const nftBackendOption = () =>
  new Option('--nft-backend <backend>', 'nftables backend')
    .choices(['auto', 'libnftables', 'nft'])
    .default('auto');
const logLevelOption = () =>
  new Option('--log-level <level>', 'log level')
    .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
    .default('info');

/**
 * Flags > environment (BULKHEAD_AGENT_<FLAG>) > --config file > defaults. The unit's
 * BULKHEAD_AGENT_ARGS holds extra flags, not a setting. `--restore-only` reads the agent's file
 * and environment too, leaving the keys it does not use to the agent.
 */
function parseOrExit(program: Command, argv: string[], restoreOnly = false): void {
  program
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(`bulkhead-agent: ${s}`) });
  try {
    parseSettings(program, argv, {
      envPrefix: 'BULKHEAD_AGENT_',
      reservedEnv: ['ARGS'],
      ignoreUnknown: restoreOnly,
    });
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}

/**
 * `bulkhead-agent --restore-only`: load the persisted last-known-good policy into nftables
 * and exit, without any network (boot.ts). Exit 0 when loaded, already there or nothing
 * persisted; 1 when it could not be loaded (the kernel keeps what it had).
 */
async function restoreOnly(argv: string[]): Promise<never> {
  const program = new Command('bulkhead-agent')
    .description('Load the persisted policy into nftables and exit (boot, before the network)')
    .option('--restore-only', 'load the persisted policy and exit')
    .addOption(stateDirOption())
    .addOption(nftBackendOption())
    .addOption(logLevelOption());
  parseOrExit(program, argv, true);
  const o = program.opts<{
    stateDir: string;
    nftBackend: AgentOptions['nftBackend'];
    logLevel: string;
  }>();
  const logger = pino({ level: o.logLevel, base: { service: 'bulkhead-agent-restore' } });
  const driver = createNftDriver({ backend: o.nftBackend });
  let outcome: RestoreOutcome | undefined;
  try {
    outcome = await bootRestore({ stateDir: o.stateDir, driver, logger });
    logger.info({ outcome }, 'boot restore done');
  } catch (err) {
    logger.fatal({ err }, 'boot restore failed');
  } finally {
    driver.close();
  }
  process.exit(outcome === undefined || outcome === 'failed' ? 1 : 0);
}

function parse(argv: string[]): AgentOptions {
  const program = new Command('bulkhead-agent')
    .description('Bulkhead host agent: enrols, syncs rule sets, programs nftables')
    .version(AGENT_VERSION)
    .requiredOption(
      '--control-plane <host:port>',
      'control plane gRPC endpoint; repeatable or comma-separated, tried in turn, names resolved again on every reconnect',
      collect,
      [],
    )
    .requiredOption('--ca-cert <file>', 'CA certificate (PEM) of the control plane')
    .option('--bootstrap-token <token>', 'enrolment token (first start only)')
    .option('--bootstrap-token-file <file>', 'file holding the enrolment token')
    .option(
      '--restore-only',
      'load the persisted policy into nftables and exit (boot, no network; only --state-dir, --nft-backend and --log-level apply)',
    )
    .addOption(stateDirOption())
    .option('--hostname <name>', 'hostname to report', hostname())
    .option(
      '--address <ip>',
      'host address to report (repeatable; default: all non-internal)',
      collect,
      [],
    )
    .option('--label <k=v>', 'label requested at enrolment (repeatable)', collect, [])
    .option('--admin-cidr <cidr>', 'failsafe admin source CIDR (repeatable)', collect, [])
    .option('--admin-port <n>', 'failsafe admin TCP port', intIn('--admin-port', 1, 65535), 22)
    .option('--metrics-listen <host:port>', 'where to serve /metrics', '127.0.0.1:9101')
    .option(
      '--telemetry-interval <seconds>',
      'seconds between telemetry batches',
      intIn('--telemetry-interval', 1, 86_400),
      10,
    )
    .option(
      '--flow-table-size <n>',
      'elements per kernel flow set (one set per direction and family)',
      intIn('--flow-table-size', 1, 16_777_216),
      DEFAULT_FLOW_TABLE.size,
    )
    .option(
      '--flow-timeout <seconds>',
      'seconds an undrained flow element lives in the kernel',
      intIn('--flow-timeout', 1, 86_400 * 7),
      DEFAULT_FLOW_TABLE.timeoutSeconds,
    )
    .option(
      '--drift-check-interval <seconds>',
      'seconds between compares of the kernel table with the desired one (repairs drift; elements every 10 min)',
      intIn('--drift-check-interval', 1, 86_400),
      5,
    )
    .option(
      '--max-pending-flows <n>',
      'flow keys kept while they wait to be sent; new keys past it are dropped and counted',
      intIn('--max-pending-flows', 1, 10_000_000),
      DEFAULT_MAX_PENDING_FLOWS,
    )
    .addOption(nftBackendOption())
    .option(
      '--backoff-base <seconds>',
      'ceiling of the first retry delay (enrolment, Sync); doubles per failure, full jitter',
      intIn('--backoff-base', 1, 3600),
      DEFAULT_BACKOFF.baseMs / 1000,
    )
    .option(
      '--backoff-max <seconds>',
      'largest retry delay ceiling',
      intIn('--backoff-max', 1, 86_400),
      DEFAULT_BACKOFF.capMs / 1000,
    )
    .option(
      '--keepalive-time <seconds>',
      'gRPC keepalive ping interval on the Sync stream',
      intIn('--keepalive-time', 1, 3600),
      DEFAULT_KEEPALIVE.timeMs / 1000,
    )
    .option(
      '--keepalive-timeout <seconds>',
      'a ping unanswered this long closes the link (dead link noticed within time + timeout)',
      intIn('--keepalive-timeout', 1, 3600),
      DEFAULT_KEEPALIVE.timeoutMs / 1000,
    )
    .option(
      '--server-name <name>',
      'name expected in the control plane certificate',
      DEFAULT_SERVER_NAME,
    )
    .addOption(logLevelOption());
  parseOrExit(program, argv);
  const o = program.opts<{
    controlPlane: string[];
    caCert: string;
    bootstrapToken?: string;
    bootstrapTokenFile?: string;
    stateDir: string;
    hostname: string;
    address: string[];
    label: string[];
    adminCidr: string[];
    adminPort: number;
    metricsListen: string;
    telemetryInterval: number;
    flowTableSize: number;
    flowTimeout: number;
    driftCheckInterval: number;
    maxPendingFlows: number;
    nftBackend: AgentOptions['nftBackend'];
    backoffBase: number;
    backoffMax: number;
    keepaliveTime: number;
    keepaliveTimeout: number;
    serverName: string;
    logLevel: string;
  }>();
  const from = (attribute: string) => settingSource(program, attribute);

  if (o.bootstrapToken && o.bootstrapTokenFile) {
    fail('give only one of --bootstrap-token and --bootstrap-token-file');
  }
  const token = o.bootstrapTokenFile
    ? readFlagFile('--bootstrap-token-file', o.bootstrapTokenFile).trim()
    : o.bootstrapToken;
  const labels: Record<string, string> = {};
  for (const l of o.label) {
    const i = l.indexOf('=');
    if (i <= 0) fail(`${from('label')}: expected key=value, got ${JSON.stringify(l)}`);
    labels[l.slice(0, i)] = l.slice(i + 1);
  }
  for (const cidr of o.adminCidr) {
    try {
      parseCidr(cidr);
    } catch {
      fail(`${from('adminCidr')}: not a CIDR: ${JSON.stringify(cidr)}`);
    }
  }
  if (o.backoffBase > o.backoffMax) fail('--backoff-base must not exceed --backoff-max');
  for (const a of o.address) {
    if (!isIP(a)) fail(`${from('address')}: not an IP address: ${JSON.stringify(a)}`);
  }
  let metricsListen: AgentOptions['metricsListen'];
  try {
    parseControlPlanes(o.controlPlane);
    metricsListen = parseHostPort(o.metricsListen, '--metrics-listen', { allowZero: true });
  } catch (err) {
    fail((err as Error).message);
  }
  const logger = pino({ level: o.logLevel, base: { service: 'bulkhead-agent' } });
  return {
    controlPlane: o.controlPlane,
    caPem: readFlagFile('--ca-cert', o.caCert),
    bootstrapToken: token || undefined,
    stateDir: o.stateDir,
    hostname: o.hostname,
    addresses: o.address.length > 0 ? o.address : defaultAddresses(),
    labels,
    admin: o.adminCidr.length > 0 ? { cidrs: o.adminCidr, port: o.adminPort } : undefined,
    metricsListen,
    telemetryIntervalMs: o.telemetryInterval * 1000,
    flowTable: { size: o.flowTableSize, timeoutSeconds: o.flowTimeout },
    maxPendingFlows: o.maxPendingFlows,
    driftCheckIntervalMs: o.driftCheckInterval * 1000,
    nftBackend: o.nftBackend,
    backoff: { baseMs: o.backoffBase * 1000, capMs: o.backoffMax * 1000 },
    keepalive: { timeMs: o.keepaliveTime * 1000, timeoutMs: o.keepaliveTimeout * 1000 },
    serverName: o.serverName,
    logger,
  };
}

async function main(): Promise<void> {
  if (process.argv.includes('--restore-only')) await restoreOnly(process.argv);
  const options = parse(process.argv);
  const { logger } = options;
  let agent: ReturnType<typeof createAgent>;
  try {
    agent = createAgent({
      ...options,
      // Refused by the control plane: retrying cannot help, an operator must fix the flags
      // or the token. Exit like a bad flag; the rules in the kernel stay.
      onFatal: (err) => void agent.stop().finally(() => fail(err.message)),
    });
    await agent.start();
  } catch (err) {
    if (err instanceof AgentError && err.code === 'CONFIG_INVALID') fail(err.message);
    logger.fatal({ err }, 'agent failed to start');
    process.exit(1);
  }
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down; nftables rules stay in place');
    agent.stop().then(
      () => process.exit(0),
      (err) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

void main();
