/**
 * Names shared by the deployment and the CLI: the state machine of an export, and the stack output
 * that publishes its ARN.
 */

/** `forms-daily` → `FormsDaily`. */
function pascal(name: string): string {
  return name
    .split('-')
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');
}

/** Name of an export's state machine (fixed, so the machine can start itself for continue-as-new). */
export function stateMachineName(stackName: string, exportName: string): string {
  return `${stackName}-${exportName}`;
}

/** Key of the stack output holding an export's state machine ARN. */
export function stateMachineOutputKey(exportName: string): string {
  return `StateMachine${pascal(exportName)}`;
}

/** Key of the stack output holding a credential's secret ARN. */
export function credentialSecretOutputKey(credentialName: string): string {
  return `CredentialSecret${pascal(credentialName)}`;
}
