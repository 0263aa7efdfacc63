/**
 * Keeps the Glue catalog of a Parquet export in step with its query at run time, for an export defined
 * in HQ (`query: { hqExport }`): its config is downloaded by each run, so the CDK app cannot create its
 * tables at synth. The entries are the ones the CDK app creates for a query file (`glueTableSets`).
 *
 * - A missing table, deletions table, manifests table (`ccexport_manifests`) or view is created.
 * - A data table keeps every column it has, in its order, and gets the query's new columns appended:
 *   a column removed in HQ stays (files written after the edit read it as null), as the PostgreSQL
 *   output keeps a removed column. A column's type is never changed (files already written keep it).
 * - The `<table>_latest` view follows the current query (its columns are the current ones).
 * - A table or view that already matches is left alone: no new table version at every run.
 */
import {
  AlreadyExistsException,
  CreateTableCommand,
  EntityNotFoundException,
  GetTableCommand,
  type GlueClient,
  type Table,
  UpdateTableCommand,
} from '@aws-sdk/client-glue';
import type { TableSpec } from '../../../query/types';
import {
  type GlueTableInput,
  type GlueTablesOptions,
  glueManifestsTable,
  glueTableSets,
  toGlueSdkTableInput,
} from './glue-tables';

export interface GlueCatalogChange {
  /** Glue table name. */
  readonly name: string;
  readonly action: 'created' | 'updated';
  /** Columns appended to a data table. */
  readonly addedColumns: readonly string[];
}

async function getTable(client: GlueClient, database: string, name: string): Promise<Table | null> {
  try {
    return (await client.send(new GetTableCommand({ DatabaseName: database, Name: name }))).Table ?? null;
  } catch (error) {
    if (error instanceof EntityNotFoundException) return null;
    throw error;
  }
}

/** The input to update `existing` to `wanted`, or null when nothing needs to change. */
function updatedInput(
  existing: Table,
  wanted: GlueTableInput,
): { input: ReturnType<typeof toGlueSdkTableInput>; added: string[] } | null {
  const input = toGlueSdkTableInput(wanted);
  if (wanted.tableType === 'VIRTUAL_VIEW') {
    const same =
      existing.ViewOriginalText === input.ViewOriginalText &&
      JSON.stringify(existing.StorageDescriptor?.Columns?.map((c) => [c.Name, c.Type]) ?? []) ===
        JSON.stringify(input.StorageDescriptor.Columns.map((c) => [c.Name, c.Type]));
    return same ? null : { input, added: [] };
  }
  const have = existing.StorageDescriptor?.Columns ?? [];
  const names = new Set(have.map((c) => c.Name));
  const added = input.StorageDescriptor.Columns.filter((c) => !names.has(c.Name));
  if (added.length === 0) return null;
  const kept = have.map((c) => ({
    Name: c.Name as string,
    Type: c.Type as string,
    ...(c.Comment !== undefined ? { Comment: c.Comment } : {}),
  }));
  return {
    input: { ...input, StorageDescriptor: { ...input.StorageDescriptor, Columns: [...kept, ...added] } },
    added: added.map((c) => c.Name),
  };
}

async function ensureTable(
  client: GlueClient,
  database: string,
  wanted: GlueTableInput,
  createOnly: boolean,
): Promise<GlueCatalogChange | null> {
  let existing = await getTable(client, database, wanted.name);
  if (existing === null) {
    try {
      await client.send(
        new CreateTableCommand({ DatabaseName: database, TableInput: toGlueSdkTableInput(wanted) }),
      );
      return { name: wanted.name, action: 'created', addedColumns: [] };
    } catch (error) {
      // Another project's slice of the same run created it meanwhile: update that one instead.
      if (!(error instanceof AlreadyExistsException)) throw error;
      existing = await getTable(client, database, wanted.name);
      if (existing === null) throw error;
    }
  }
  if (createOnly) return null;
  const update = updatedInput(existing, wanted);
  if (update === null) return null;
  await client.send(new UpdateTableCommand({ DatabaseName: database, TableInput: update.input }));
  return { name: wanted.name, action: 'updated', addedColumns: update.added };
}

/**
 * Creates or updates the catalog entries of `tables` (see the module comment) and says what changed.
 * Data tables first, then deletions tables and the manifests table, then views, as CloudFormation orders them.
 */
export async function syncGlueTables(
  client: GlueClient,
  tables: readonly TableSpec[],
  options: GlueTablesOptions,
): Promise<GlueCatalogChange[]> {
  const seen = new Set<string>();
  const distinct = tables.filter((t) => !seen.has(t.name) && seen.add(t.name));
  const sets = glueTableSets(distinct, options);
  const changes: GlueCatalogChange[] = [];
  const record = (change: GlueCatalogChange | null) => {
    if (change) changes.push(change);
  };
  for (const set of sets) record(await ensureTable(client, options.database, set.data, false));
  for (const set of sets)
    if (set.deletions) record(await ensureTable(client, options.database, set.deletions, true));
  // The views apply only the deletions objects the manifests list (glueManifestsTable).
  if (sets.some((set) => set.latest))
    record(await ensureTable(client, options.database, glueManifestsTable(options), true));
  for (const set of sets)
    if (set.latest) record(await ensureTable(client, options.database, set.latest, false));
  return changes;
}
