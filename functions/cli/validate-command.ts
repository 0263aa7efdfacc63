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
    help: 'with "sql", also apply the database checks (id column, name lengths)',
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
  const result = await validateQueryFile(resolve(io.cwd, file), {
    baseUrl: stringFlag(flags, 'commcare-hq') ?? 'https://www.commcarehq.org',
    forSql: stringFlag(flags, 'output-format') === 'sql',
  });
  const text = formatValidation(result);
  (result.errors.length > 0 ? io.stderr : io.stdout).write(text.endsWith('\n') ? text : `${text}\n`);
  return result.errors.length > 0 ? 1 : 0;
}
