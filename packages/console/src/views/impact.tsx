// The draft: what it changes against the newest revision, and its impact report (the observed
// flows it would newly block or allow if provisioned now). Reads only: provisioning stays in the
// CLI, where a note and a confirmation are asked for.
import type { ImpactView, RevisionDiff } from '@bulkhead/api';
import { useState } from 'preact/hooks';
import type { ConsoleApi } from '../api.js';
import { sinceOf, type WindowId } from '../filters.js';
import { Status, timeText, useLoad, WindowField } from '../ui.js';
import { ObjectChanges } from './revisions.js';

function DraftDiff(props: { api: ConsoleApi }) {
  const diff = useLoad(async () => {
    const revisions = await props.api.get<{ revision: number }[]>('/v1/revisions');
    const latest = revisions[0]?.revision;
    // null: nothing provisioned yet (undefined would read as still loading).
    return latest === undefined
      ? null
      : props.api.get<RevisionDiff>(`/v1/revisions/${latest}/diff?to=draft`);
  }, []);
  return (
    <Status of={diff}>
      {(d) =>
        d === null ? (
          <p class="muted">Nothing provisioned yet: the whole draft is new.</p>
        ) : (
          <>
            <h3>Draft against revision {d.from}</h3>
            <ObjectChanges changes={d.objects} />
          </>
        )
      }
    </Status>
  );
}

export function ImpactPage(props: { api: ConsoleApi }) {
  const [window, setWindow] = useState<WindowId>('7d');
  const impact = useLoad(
    () => props.api.post<ImpactView>('/v1/impact', { since: sinceOf(window, new Date()) }),
    [window],
  );
  return (
    <section>
      <h2>Draft and its impact</h2>
      <DraftDiff api={props.api} />
      <h3>Impact report</h3>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <WindowField label="Flows seen in the" value={window} set={setWindow} />
      </form>
      <Status of={impact}>
        {(r) => (
          <>
            <p id="impact-summary">
              {r.summary.newlyBlocked} newly blocked, {r.summary.newlyAllowed} newly allowed,{' '}
              {r.summary.stillWouldDeny} still would-deny, of {r.summary.flows} flows
            </p>
            <table id="impact">
              <thead>
                <tr>
                  <th>Change</th>
                  <th>Source</th>
                  <th>Destination</th>
                  <th>Service</th>
                  <th>Deciding rules</th>
                  <th>Connections</th>
                  <th>Last seen</th>
                </tr>
              </thead>
              <tbody>
                {r.groups.map((g) => (
                  <tr
                    key={`${g.change}|${g.src}|${g.dst}|${g.protocol}|${g.port}`}
                    data-change={g.change}
                  >
                    <td>
                      <span class={`verdict change-${g.change}`}>{g.change}</span>
                    </td>
                    <td>{g.src}</td>
                    <td>{g.dst}</td>
                    <td>
                      {g.protocol}/{g.port}
                    </td>
                    <td>
                      {g.rules.map((x) => `${x.workload} ${x.direction}: ${x.ruleId}`).join('; ')}
                    </td>
                    <td>{g.connections}</td>
                    <td>{timeText(g.lastSeen)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Status>
    </section>
  );
}
