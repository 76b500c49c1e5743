// Policy administration: the objects an admin edits (ip lists, services, policies, workload
// labels and modes) and the generic get/delete of any kind. Writes go to the draft only (label
// and mode may provision just their own change, `--provision`); freezing the whole draft into a
// revision is lifecycle.ts's, and reading the fleet is fleet.ts's.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { Client } from '../client.js';
import { APPLY_ORDER } from '../documents.js';
import { CliError } from '../errors.js';
import {
  type ChangeAction,
  canonical,
  fetchState,
  formatDocuments,
  KIND_FACTS,
  label,
  labelled,
  objectPath,
  PRUNE_ORDER,
  planOne,
  planPrune,
} from '../gitops.js';
import { findOne, itemPath, lookupKind } from '../kinds.js';
import { validators } from '../validate.js';
import { collect, modeOption, parseLabelChange } from './options.js';
import {
  type CommandContext,
  type Connection,
  examples,
  impactChecked,
  loadValid,
  type Row,
} from './shared.js';

const OUTCOME_WORDS: Record<ChangeAction, string> = {
  create: 'created',
  update: 'updated',
  unchanged: 'unchanged',
  delete: 'deleted',
};

const PRUNE_HELP = 'also delete policies, services and ip lists no file defines (never workloads)';

export function registerPolicyCommands(program: Command, ctx: CommandContext): void {
  const { io } = ctx;

  program
    .command('apply')
    .description('validate resource files locally, then create or update them')
    .option('-f, --filename <path>', 'YAML or JSON file or directory (repeatable)', collect, [])
    .option('--prune', PRUNE_HELP)
    .addHelpText(
      'after',
      examples('bulkhead apply -f examples/demo/', 'bulkhead apply -f policy/ --prune'),
    )
    .action(async (opts: { filename: string[]; prune?: boolean }, cmd: Command) => {
      const documents = await loadValid(ctx, opts.filename, 'apply');
      // An empty or mistyped directory must not wipe the server's policy.
      if (opts.prune && documents.length === 0) {
        throw new CliError('USAGE', '--prune with no documents would delete everything; refusing');
      }
      const { client } = await ctx.connect(cmd);
      for (const kind of APPLY_ORDER) {
        for (const doc of documents.filter((d) => d.kind === kind)) {
          const change = await labelled(doc.kind, doc.name, async () => {
            const path = objectPath(doc.kind, doc.name);
            // An identical object is not written: no audit entry, no draft change.
            const current = (await getOrUndefined(client, path)) as Row | undefined;
            const planned = planOne(doc, current);
            if (planned.action === 'unchanged') return planned;
            // Written only if still what the decision was made on: no silent lost update.
            await client.request(doc.kind === 'Workload' ? 'PATCH' : 'PUT', path, doc.body, {
              ifMatch: versionOf(current),
            });
            return planned;
          });
          io.stdout(`${label(doc.kind, doc.name)} ${OUTCOME_WORDS[change.action]}\n`);
        }
      }
      if (!opts.prune) return;
      // Listed after the writes, so that nothing just created can look unknown.
      const state = await fetchState(client, PRUNE_ORDER);
      for (const change of planPrune(documents, state)) {
        await labelled(change.kind, change.name, () =>
          client.request('DELETE', objectPath(change.kind, change.name), undefined, {
            ifMatch: versionOf(state[change.kind].get(change.name)),
          }),
        );
        io.stdout(`${label(change.kind, change.name)} deleted\n`);
      }
    });

  program
    .command('export')
    .description('write ip lists, services, policies and workloads as files apply reads back')
    .requiredOption('--output-dir <dir>', 'the directory to write (-o DIR works too)')
    .addHelpText('after', examples('bulkhead export -o policy/'))
    .action(async (opts: { outputDir: string }, cmd: Command) => {
      const { client } = await ctx.connect(cmd);
      // Everything read before anything is written: no directory half from one state.
      const state = await fetchState(client, APPLY_ORDER);
      await mkdir(opts.outputDir, { recursive: true });
      for (const kind of APPLY_ORDER) {
        const path = join(opts.outputDir, KIND_FACTS[kind].file);
        await writeFile(path, formatDocuments(kind, [...state[kind].values()]));
        io.stdout(`${path}: ${state[kind].size} ${KIND_FACTS[kind].word}(s)\n`);
      }
    });

  program
    .command('get')
    .description(
      'list resources or show one: workloads, policies, services, ip-lists, revisions, agents, tokens, enrollment-tokens',
    )
    .argument('<kind>', 'what to list (the singular works too)')
    .argument('[name]', 'show this one (agents and tokens: an id or unique id prefix)')
    .addHelpText('after', examples('bulkhead get policies', 'bulkhead get policy shop-db -o yaml'))
    .action(async (word: string, name: string | undefined, _opts: unknown, cmd: Command) => {
      const kind = lookupKind(word);
      const conn = await ctx.connect(cmd);
      if (name === undefined) {
        conn.print(await conn.client.request('GET', kind.path), kind.columns);
      } else if (kind.getOne) {
        conn.print(await conn.client.request('GET', itemPath(kind, name)), kind.columns);
      } else {
        conn.print(await findOne(conn.client, kind, name), kind.columns);
      }
    });

  program
    .command('delete')
    .description('delete a workload, policy, service, ip list, token or enrollment token')
    .argument('<kind>', 'workload, policy, service, ip-list, token or enrollment-token')
    .argument('<name>', 'its name (tokens: the id)')
    .addHelpText('after', examples('bulkhead delete policy shop-db'))
    .action(async (word: string, name: string, _opts: unknown, cmd: Command) => {
      const kind = lookupKind(word);
      if (!kind.deletable) throw new CliError('USAGE', `${kind.name} cannot be deleted`);
      const { client } = await ctx.connect(cmd);
      await client.request('DELETE', itemPath(kind, name));
      io.stdout(`${kind.name}/${name} deleted\n`);
    });

  const workloads = lookupKind('workloads');

  withProvisionOptions(
    program
      .command('label')
      .description('set (k=v) or remove (k-) labels of a workload')
      .argument('<workload>', 'the workload (its host name)')
      .argument('<changes...>', 'k=v to set, k- to remove'),
  )
    .addHelpText(
      'after',
      examples(
        'bulkhead label db-1 env=prod tier-',
        'bulkhead label web-1 app=web --provision --note "web joins the shop"',
      ),
    )
    .action(async (name: string, changes: string[], opts: ProvisionOptions, cmd: Command) => {
      const edits = changes.map(parseLabelChange);
      checkProvisionOptions(opts);
      const conn = await ctx.connect(cmd);
      const { client } = conn;
      const path = itemPath(workloads, name);
      const current = await client.request<{ labels?: Record<string, string>; version?: unknown }>(
        'GET',
        path,
      );
      const before = current?.labels ?? {};
      const labels = { ...before };
      for (const e of edits) {
        if (e.value === undefined) delete labels[e.key];
        else labels[e.key] = e.value;
      }
      if (canonical(labels) === canonical(before)) {
        io.stdout(`workload/${name} unchanged\n`);
        return;
      }
      const problems = validators.workloadPatch({ labels }, '');
      if (problems.length > 0) throw new CliError('USAGE', 'invalid labels', { details: problems });
      // Merged from what was read, so written only if nobody changed the labels meanwhile.
      const done = await patchWorkload(conn, path, { labels }, opts, versionOf(current));
      if (done) io.stdout(`workload/${name} labels: ${formatLabels(labels)}${done.said}\n`);
    });

  withProvisionOptions(
    program
      .command('mode')
      .description('switch a workload between monitor and enforce, per direction')
      .argument('<workload>', 'the workload (its host name)')
      .addOption(modeOption('--ingress <mode>'))
      .addOption(modeOption('--egress <mode>')),
  )
    .addHelpText(
      'after',
      examples(
        'bulkhead mode db-1 --ingress enforce',
        'bulkhead mode db-1 --ingress enforce --provision --confirm',
      ),
    )
    .action(
      async (
        name: string,
        opts: { ingress?: string; egress?: string } & ProvisionOptions,
        cmd: Command,
      ) => {
        if (!opts.ingress && !opts.egress) {
          throw new CliError('USAGE', 'mode needs --ingress and/or --egress');
        }
        checkProvisionOptions(opts);
        const conn = await ctx.connect(cmd);
        const mode: Row = {};
        if (opts.ingress) mode.ingress = opts.ingress;
        if (opts.egress) mode.egress = opts.egress;
        const done = await patchWorkload(conn, itemPath(workloads, name), { mode }, opts);
        if (!done) return;
        const shown = (done.workload?.mode as Row | undefined) ?? mode;
        const text = Object.entries(shown).map(([k, v]) => `${k}=${String(v)}`);
        io.stdout(`workload/${name} mode: ${text.join(' ')}${done.said}\n`);
      },
    );

  /**
   * PATCHes a workload: into the draft, or with `--provision` as a revision of its own behind the
   * impact gate. Resolves to the workload and what to say after it, or undefined when refused.
   */
  async function patchWorkload(
    conn: Connection,
    path: string,
    body: Row,
    opts: ProvisionOptions,
    ifMatch?: number,
  ): Promise<{ workload?: Row; said: string } | undefined> {
    if (!opts.provision) {
      const workload = await conn.client.request<Row | undefined>('PATCH', path, body, { ifMatch });
      return { workload, said: ' (draft; `bulkhead provision` applies it)' };
    }
    const query = `?provision=true${opts.confirm ? '&confirm=true' : ''}`;
    const sent = { ...body, ...(opts.note === undefined ? {} : { note: opts.note }) };
    // Wrapped, so that an empty answer does not read as a refusal.
    const answer = await impactChecked(ctx, conn, 'provision', async () => ({
      workload: await conn.client.request<Row | undefined>('PATCH', path + query, sent, {
        ifMatch,
      }),
    }));
    if (!answer) return undefined;
    const revision = (answer.workload?.provisioned as { revision?: number } | undefined)?.revision;
    return { workload: answer.workload, said: ` (provisioned as revision ${revision ?? '?'})` };
  }
}

interface ProvisionOptions {
  provision?: boolean;
  confirm?: boolean;
  note?: string;
}

/** `label` and `mode` provision their one change at once with these. */
const withProvisionOptions = (cmd: Command): Command =>
  cmd
    .option('--provision', 'provision this change at once (impact-checked), not only the draft')
    .option('--confirm', 'with --provision: even if observed flows would be newly blocked')
    .option('--note <text>', 'with --provision: why (kept with the revision)');

function checkProvisionOptions(opts: ProvisionOptions): void {
  if (!opts.provision && (opts.confirm || opts.note !== undefined)) {
    throw new CliError('USAGE', '--confirm and --note go with --provision');
  }
  if (opts.note?.trim() === '') throw new CliError('USAGE', '--note must not be empty');
}

/** The object's `version` for If-Match; undefined (an unconditional write) when it has none. */
function versionOf(item: Row | undefined): number | undefined {
  return typeof item?.version === 'number' ? item.version : undefined;
}

async function getOrUndefined(client: Client, path: string): Promise<unknown> {
  try {
    return await client.request('GET', path);
  } catch (err) {
    if (err instanceof CliError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

function formatLabels(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}=${v}`);
  return pairs.length === 0 ? '(none)' : pairs.join(',');
}
