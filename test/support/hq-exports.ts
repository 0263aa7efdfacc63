/** Exports defined in HQ, as the sandbox serves them to the tests of `query: { hqExport }` and `hq:` runs. */
import type { SandboxDetColumn, SandboxDetExport } from '../../functions/sandbox';
import { FORM_TYPES } from '../../functions/sandbox/records';

/** Columns of the sandbox's registration form, as an export in HQ names them. */
export const REGISTRATION_COLUMNS = {
  id: { field: 'id', source: 'id' },
  householdName: { field: 'household_name', source: 'form.household_name' },
  householdSize: { field: 'household_size', source: 'form.household_size' },
} satisfies Record<string, SandboxDetColumn>;

/** A form export of the sandbox's registration form with `columns`, under the given id and name. */
export function registrationExport(
  columns: readonly SandboxDetColumn[],
  identity: { readonly id: string; readonly name: string } = {
    id: 'exp-registrations',
    name: 'Registrations',
  },
): SandboxDetExport {
  return { ...identity, type: 'form', xmlns: FORM_TYPES[0]!.xmlns, columns };
}
