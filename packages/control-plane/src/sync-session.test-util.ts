// A Sync stream for tests that speak to a real control plane as an agent would (not part of the
// public API).
import type { RuleSet, SyncRequest, SyncResponse, Welcome } from '@bulkhead/proto';
import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';

/** A Sync stream with a queue of what arrived, so a test can await the next message. */
export class SyncSession {
  private readonly received: SyncResponse[] = [];
  /** Welcomes, the answer to every Hello, kept apart so that next() yields RuleSets. */
  readonly welcomes: Welcome[] = [];
  private waiters: Array<() => void> = [];
  readonly error: Promise<ServiceError>;

  constructor(readonly stream: ClientDuplexStream<SyncRequest, SyncResponse>) {
    stream.on('data', (msg: SyncResponse) => {
      if (msg.welcome) this.welcomes.push(msg.welcome);
      else this.received.push(msg);
      this.wake();
    });
    this.error = new Promise((resolve) => stream.on('error', resolve));
    stream.on('error', () => this.wake());
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async next(): Promise<RuleSet> {
    while (this.received.length === 0) {
      await Promise.race([
        new Promise<void>((r) => this.waiters.push(r)),
        this.error.then((e) => Promise.reject(e)),
      ]);
    }
    return this.received.shift()!.ruleSet!;
  }

  send(msg: SyncRequest) {
    this.stream.write(msg);
  }

  /**
   * Messages on one stream are handled in order, so a Hello claiming nothing is applied, and the
   * RuleSet it brings back, proves that everything sent before it was processed.
   */
  async barrier(): Promise<RuleSet> {
    this.send({
      hello: {
        appliedRevision: 0,
        appliedHash: '',
        hostname: '',
        addresses: [],
        agentVersion: 't',
      },
    });
    return this.next();
  }
}
