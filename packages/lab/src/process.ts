// The lab's child processes (lab.ts starts them in namespaces): a process group stopped with a
// grace period, and a child's stdout read as lines.
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type ExitInfo, LabError } from './types.js';

/** A started child and its exit. */
export interface Tracked {
  child: ChildProcess;
  exited: Promise<ExitInfo>;
}

export async function stopGroup(t: Tracked, graceMs: number): Promise<ExitInfo> {
  const pid = t.child.pid;
  const signal = (sig: NodeJS.Signals) => {
    if (pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch {
      // group already gone
    }
  };
  if (t.child.exitCode === null && t.child.signalCode === null) {
    signal(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
    if (graceMs > 0) {
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      await t.exited;
      clearTimeout(timer);
    }
  }
  // The leader may be gone while children it forked linger in the group.
  signal('SIGKILL');
  return t.exited;
}

/** Reads a child's stdout as lines; waitFor() resolves with the first matching line. */
export class LineWaiter {
  private readonly buffered: string[] = [];
  private readonly waiters = new Set<{
    match: (l: string) => boolean;
    resolve: (l: string | undefined) => void;
  }>();
  private closed = false;

  constructor(child: ChildProcess) {
    if (!child.stdout) throw new LabError('LAB_PROCESS_FAILED', 'child has no stdout pipe');
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      for (const w of this.waiters) {
        if (w.match(line)) {
          this.waiters.delete(w);
          w.resolve(line);
          return;
        }
      }
      this.buffered.push(line);
    });
    rl.on('close', () => {
      this.closed = true;
      for (const w of this.waiters) w.resolve(undefined);
      this.waiters.clear();
    });
  }

  next(timeoutMs: number): Promise<string | undefined> {
    return this.waitFor(() => true, timeoutMs);
  }

  /** The matching line, or undefined on timeout or when stdout closes. */
  waitFor(match: (l: string) => boolean, timeoutMs: number): Promise<string | undefined> {
    const i = this.buffered.findIndex(match);
    if (i >= 0) return Promise.resolve(this.buffered.splice(i, 1)[0]);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const w = {
        match,
        resolve: (l: string | undefined) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        resolve(undefined);
      }, timeoutMs);
      this.waiters.add(w);
    });
  }
}

export function firstLine(t: Tracked, timeoutMs: number): Promise<string | undefined> {
  return new LineWaiter(t.child).next(timeoutMs);
}

export function parse(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
