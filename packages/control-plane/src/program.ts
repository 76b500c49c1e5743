#!/usr/bin/env node
import { join } from 'node:path';
import { ConfigError, parseSettings, settingSource } from '@bulkhead/config';
import { Command, CommanderError, Option } from 'commander';
import {
  checkSiemTargets,
  createControlPlane,
  DEFAULT_API_LISTEN,
  DEFAULT_GRPC_LISTEN,
  parseListen,
} from './control-plane.js';
import { isControlPlaneError } from './errors.js';
import { VERSION } from './version.js';

const USAGE_ERROR = 2;

const program = new Command('bulkhead-control-plane')
  .description('Bulkhead control plane: REST API, policy store, CA and agent gRPC service')
  .version(VERSION)
  .option(
    '--data-dir <dir>',
    'state directory (database, CA, initial admin token)',
    '/var/lib/bulkhead',
  )
  .option('--db <path>', 'SQLite database file (default <data-dir>/bulkhead.db)')
  .option('--api-listen <host:port>', 'REST API address', DEFAULT_API_LISTEN)
  .option('--grpc-listen <host:port>', 'agent gRPC (TLS) address', DEFAULT_GRPC_LISTEN)
  .option(
    '--tls-san <name|ip>',
    'extra DNS name or IP for the gRPC server certificate (repeatable)',
    (v: string, acc: string[]) => [...acc, v],
    [] as string[],
  )
  .option(
    '--siem <url>',
    'SIEM target for audit and denied-flow events, repeatable: syslog+udp|tcp|tls://host[:port]?format=cef|json, file:///path',
    (v: string, acc: string[]) => [...acc, v],
    [] as string[],
  )
  .option(
    '--siem-spool-size <MiB>',
    'on-disk spool per TCP/TLS SIEM target (<data-dir>/siem-spool); the oldest go first past it',
    '64',
  )
  .option(
    '--offline-after <seconds>',
    'an agent without a stream this long is offline (event, metric, agents list)',
    '120',
  )
  .option(
    '--offline-withdraw',
    "withdraw a workload's addresses from peers' rule sets while all its agents are offline",
    false,
  )
  .option(
    '--flow-retention-days <days>',
    'keep hourly flow buckets and unseen flows this long',
    '35',
  )
  .option(
    '--max-flow-rows <n>',
    'most distinct flows kept; the least recently seen go first',
    '1000000',
  )
  .option(
    '--grpc-max-connections-per-source <n>',
    'open agent connections per source address (raise for many agents behind one NAT address)',
    '256',
  )
  .option(
    '--grpc-max-handshakes <n>',
    'agent TLS handshakes under way at once; later connections wait their turn in arrival order',
    '256',
  )
  .option(
    '--max-ruleset-entries <n>',
    'a provision warns about a workload whose rule set passes this many entries',
    '200000',
  )
  .option('--max-ip-list-bytes <n>', 'largest PUT /v1/ip-lists/:name body', String(32 << 20))
  .addOption(
    new Option('--log-level <level>', 'log level')
      .choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])
      .default('info'),
  )
  .exitOverride()
  .showHelpAfterError(false);

function fail(message: string): never {
  process.stderr.write(`bulkhead-control-plane: ${message}\n`);
  process.exit(USAGE_ERROR);
}

try {
  // Flags > environment (BULKHEAD_CONTROL_PLANE_<FLAG>) > --config file > defaults; the unit's
  // BULKHEAD_CONTROL_PLANE_ARGS holds extra flags, not a setting.
  parseSettings(program, process.argv, {
    envPrefix: 'BULKHEAD_CONTROL_PLANE_',
    reservedEnv: ['ARGS'],
  });
} catch (err) {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : USAGE_ERROR);
  }
  if (err instanceof ConfigError) fail(err.message);
  throw err;
}
/** The flag, variable or file key a value came from, for the message that refuses it. */
const from = (attribute: string) => settingSource(program, attribute);

const opts = program.opts<{
  dataDir: string;
  db?: string;
  apiListen: string;
  grpcListen: string;
  tlsSan: string[];
  siem: string[];
  siemSpoolSize: string;
  offlineAfter: string;
  offlineWithdraw: boolean;
  flowRetentionDays: string;
  maxFlowRows: string;
  grpcMaxConnectionsPerSource: string;
  grpcMaxHandshakes: string;
  maxRulesetEntries: string;
  maxIpListBytes: string;
  logLevel: string;
}>();

try {
  parseListen(opts.apiListen, from('apiListen'));
  parseListen(opts.grpcListen, from('grpcListen'));
} catch (err) {
  fail(isControlPlaneError(err) ? err.message : String(err));
}
try {
  checkSiemTargets(opts.siem);
} catch (err) {
  fail(isControlPlaneError(err) ? err.message : String(err));
}
const positive = (attribute: keyof typeof opts): number => {
  const value = String(opts[attribute]);
  if (!/^[1-9]\d{0,9}$/.test(value)) {
    fail(`${from(attribute)} must be a positive integer, got "${value}"`);
  }
  return Number(value);
};
const flowRetentionDays = positive('flowRetentionDays');
const maxFlowRows = positive('maxFlowRows');
const siemSpoolMiB = positive('siemSpoolSize');
const maxConnectionsPerSource = positive('grpcMaxConnectionsPerSource');
const maxHandshakes = positive('grpcMaxHandshakes');
const maxRuleSetEntries = positive('maxRulesetEntries');
const maxIpListBytes = positive('maxIpListBytes');
const offlineAfterSeconds = positive('offlineAfter');
if (opts.tlsSan.some((s) => s.trim() === '' || /[\s,]/.test(s))) {
  fail(`${from('tlsSan')} takes one DNS name or IP address per value`);
}

const cp = createControlPlane({
  dataDir: opts.dataDir,
  dbPath: opts.db ?? join(opts.dataDir, 'bulkhead.db'),
  apiListen: opts.apiListen,
  grpcListen: opts.grpcListen,
  tlsSans: opts.tlsSan,
  siem: opts.siem,
  siemOptions: { spoolMaxBytes: siemSpoolMiB * 1024 * 1024 },
  flowRetentionDays,
  maxFlowRows,
  grpcLimits: { maxConnectionsPerSource, maxHandshakes },
  maxRuleSetEntries,
  maxIpListBytes,
  offline: { afterMs: offlineAfterSeconds * 1000, withdraw: opts.offlineWithdraw },
  logLevel: opts.logLevel,
});

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    // The process exits next: the kernel closes the agents' connections at once.
    cp.stop({ leaveConnections: true }).then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`bulkhead-control-plane: stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  });
}

// logrotate's postrotate: the SIEM file target opens its path again.
process.on('SIGHUP', () => cp.reopenFiles());

cp.start().catch((err: unknown) => {
  process.stderr.write(
    `bulkhead-control-plane: cannot start: ${(err as Error).message ?? String(err)}\n`,
  );
  process.exit(1);
});
