// Revisions, newest first, and what the chosen one changed: each object's fields and rules, and
// its JSON before and after as a line diff.
import type { ObjectChange } from '@bulkhead/api';
import { useState } from 'preact/hooks';
import type { ConsoleApi } from '../api.js';
import { jsonDiff } from '../line-diff.js';
import { Status, timeText, useLoad } from '../ui.js';

interface RevisionRecord {
  revision: number;
  author: string;
  note: string;
  createdAt: string;
}

export function ObjectChanges(props: { changes: ObjectChange[] }) {
  if (props.changes.length === 0) return <p class="muted">No object changed.</p>;
  return (
    <ul class="changes">
      {props.changes.map((c) => (
        <li key={`${c.kind}/${c.name}`} class={`change change-${c.change}`}>
          <h4>
            {c.change} {c.kind} {c.name}
            {c.fields ? ` (${c.fields.join(', ')})` : ''}
          </h4>
          {c.rules && (
            <p class="muted">
              rules added: {c.rules.added.join(', ') || '—'}; removed:{' '}
              {c.rules.removed.join(', ') || '—'}; changed: {c.rules.changed.join(', ') || '—'}
            </p>
          )}
          <pre class="diff">
            {jsonDiff(c.before, c.after).map((l, i) => (
              <div key={i} class={l.op === '+' ? 'add' : l.op === '-' ? 'del' : 'same'}>
                {l.op} {l.text}
              </div>
            ))}
          </pre>
        </li>
      ))}
    </ul>
  );
}

function RevisionDetail(props: { api: ConsoleApi; n: number }) {
  const rev = useLoad(
    () => props.api.get<RevisionRecord & { changes: ObjectChange[] }>(`/v1/revisions/${props.n}`),
    [props.n],
  );
  return (
    <div id="revision-detail">
      <Status of={rev}>
        {(r) => (
          <>
            <h3>
              Revision {r.revision} by {r.author}: {r.note}
            </h3>
            <ObjectChanges changes={r.changes} />
          </>
        )}
      </Status>
    </div>
  );
}

export function RevisionsPage(props: { api: ConsoleApi }) {
  const list = useLoad(() => props.api.get<RevisionRecord[]>('/v1/revisions'), []);
  const [chosen, setChosen] = useState<number | undefined>();
  return (
    <section>
      <h2>Policy revisions</h2>
      <Status of={list}>
        {(rows) =>
          rows.length === 0 ? (
            <p class="muted">Nothing provisioned yet.</p>
          ) : (
            <>
              <table id="revisions">
                <thead>
                  <tr>
                    <th>Revision</th>
                    <th>Author</th>
                    <th>Note</th>
                    <th>Created</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((r) => (
                    <tr key={r.revision} class={r.revision === chosen ? 'chosen' : ''}>
                      <td>
                        <button type="button" onClick={() => setChosen(r.revision)}>
                          #{r.revision}
                        </button>
                      </td>
                      <td>{r.author}</td>
                      <td>{r.note}</td>
                      <td>{timeText(r.createdAt)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              <RevisionDetail api={props.api} n={chosen ?? rows[0]!.revision} />
            </>
          )
        }
      </Status>
    </section>
  );
}
