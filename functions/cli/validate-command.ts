/** `ccexport validate-query FILE`: every table with its source, filters and columns, or located errors. */
import { resolve } from 'node:path';
import { formatValidation, validateQueryFile } from '../query';
import { booleanFlag, type FlagSpec, formatHelp, parseArgs, stringFlag, UsageError } from './args';
import type { CommandIO } from './io';

const FLAGS: readonly FlagSpec[] = [
  { name: 'help', kind: 'boolean', help: 'print this help' },
  {
    name: 'output-format',
    kind: 'string',
    help:
      'with "sql", also every check the SQL output makes before a run: an id field, 63-byte column names, ' +
      'reserved and checkpoint table names, names that map to one table or column (whether a table of the ' +
      'name already exists in the database only a run can tell)',
  },
  {
    name: 'deletions',
    kind: 'string',
    help: 'the run\'s --deletions: with "mark" the SQL checks include the _deleted and _deleted_at columns the run adds',
    defaultText: 'remove',
  },
  {
    name: 'commcare-hq',
    kind: 'string',
    help: 'base URL used by form_url/case_url/attachment_url',
    defaultText: 'prod',
  },
];

export async function runValidateCommand(argv: string[], io: CommandIO): Promise<number> {
  const { flags, positionals } = parseArgs(argv, FLAGS);
  if (booleanFlag(flags, 'help')) {
    io.stdout.write(
      formatHelp('ccexport validate-query FILE: check a DET query file (Excel or JSON)', FLAGS),
    );
    return 0;
  }
  const [file, extra] = positionals;
  if (!file) throw new UsageError('validate-query needs a query file: ccexport validate-query FILE');
  if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
  const deletions = stringFlag(flags, 'deletions') ?? 'remove';
  if (deletions !== 'remove' && deletions !== 'mark' && deletions !== 'ignore')
    throw new UsageError(`--deletions expects remove, mark or ignore (got "${deletions}")`);
  const result = await validateQueryFile(resolve(io.cwd, file), {
    baseUrl: stringFlag(flags, 'commcare-hq') ?? 'https://www.commcarehq.org',
    forSql: stringFlag(flags, 'output-format') === 'sql',
    deletions,
  });
  const text = formatValidation(result);
  (result.errors.length > 0 ? io.stderr : io.stdout).write(text.endsWith('\n') ? text : `${text}\n`);
  return result.errors.length > 0 ? 1 : 0;
}
