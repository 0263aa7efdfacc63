/**
 * Names shared by the deployment and the CLI: the state machine of an export, the stack output
 * that publishes its ARN, and a credential's secret.
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

/** Name of a credential's secret (retained when its stack is deleted; a new stack may adopt it). */
export function credentialSecretName(credentialName: string): string {
  return `ccexport/credentials/${credentialName}`;
}

/**
 * True when `arn` is the complete ARN (the name plus Secrets Manager's six-character suffix) of
 * credential `credentialName`'s secret.
 */
export function isCredentialSecretArn(arn: string, credentialName: string): boolean {
  const match = /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(.+)-[A-Za-z0-9]{6}$/.exec(arn);
  return match?.[1] === credentialSecretName(credentialName);
}
