import type { Cell, TableSpec } from '../../functions/query/types';
import type { RunContext, SourceCheckpoint } from '../../functions/sinks/types';

/** A small RFC 4180 parser (quoted fields, doubled quotes, CRLF) for reading our csv back. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
        continue;
      }
      if (ch === '"') quoted = false;
      else field += ch;
      i += 1;
      continue;
    }
    if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i += 1;
    } else field += ch;
    i += 1;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

export const formsTable: TableSpec = {
  name: 'forms',
  headings: ['id', 'name', 'age', 'active', 'visited', 'weight', 'extra', 'empty'],
  dataTypes: [null, null, null, null, null, null, null, null],
};

export const childTable: TableSpec = {
  name: 'forms / children: "q",;',
  headings: ['id', 'parent', 'note'],
  dataTypes: [null, null, null],
};

export function formRow(n: number): Cell[] {
  return [
    `form-${String(n).padStart(5, '0')}`,
    n % 7 === 0 ? 'Zoë, "the" one\nsecond line' : `name ${n}`,
    n,
    n % 2 === 0,
    new Date(Date.UTC(2024, 0, 1 + (n % 28), 10, 20, 30)),
    n + 0.5,
    n % 5 === 0 ? { a: n, b: [1, 'x'] } : null,
    null,
  ];
}

export function run(runId: string, overrides: Partial<RunContext> = {}): RunContext {
  return { runId, checkpointKey: 'key-1', project: 'demo', snapshot: false, ...overrides };
}

export function checkpoint(indexedOn: string, overrides: Partial<SourceCheckpoint> = {}): SourceCheckpoint {
  return {
    checkpointKey: 'key-1',
    project: 'demo',
    dataSource: 'form',
    tables: ['forms'],
    position: { indexedOn, boundaryIds: ['a'] },
    writtenAt: '2024-05-01T00:00:00.000Z',
    ...overrides,
  };
}

/** The pid of a process that has exited (and been reaped): what a run killed with SIGKILL leaves in its lease. */
export async function deadPid(): Promise<number> {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  const pid = child.pid;
  await new Promise((resolve) => child.on('close', resolve));
  if (pid === undefined) throw new Error('node -e "" did not start');
  return pid;
}
