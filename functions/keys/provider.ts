/**
 * Key providers behind one interface. A provider is built from a credential document (base URL, the
 * key that authenticates management calls, provider options); the rotation core calls it.
 */
import type { CredentialSecret } from './secret';

/** A key as issued by a provider. */
export interface IssuedKey {
  readonly key: string;
  readonly keyName: string;
  /** The provider's id for the key where it has one (CiviCRM: the contact id holding it). */
  readonly providerKeyId?: string;
  /** When the provider will expire it, if it does. */
  readonly expiresAt?: string;
  /** Provider options that change with the key (CiviCRM: which contact is now active). */
  readonly options?: Record<string, unknown>;
}

/** A key as listed by a provider (never the key itself). */
export interface ListedKey {
  readonly keyName: string;
  readonly providerKeyId?: string;
  readonly createdAt?: string;
}

export interface KeyProvider {
  /** Creates the key named `name`, or returns the existing one with that name (idempotent). */
  create(name: string): Promise<IssuedKey>;
  /** Pushes a created key to the provider where creation is local (CiviCRM). Safe to repeat. */
  set?(issued: IssuedKey): Promise<void>;
  /** Resolves when `key` authenticates and reaches every configured project; throws KeyTestError. */
  test(key: string): Promise<void>;
  /** Revokes a key by provider id or name. Throws ManualStepRequired-style errors where impossible. */
  revoke(idOrName: string): Promise<void>;
  /** Keys the provider knows for this user (names and ids only). */
  list(): Promise<ListedKey[]>;
  /** False when revocation needs a person (CommCare HQ). */
  readonly canRevoke: boolean;
  /** False when a person has to create the key (CommCare HQ). */
  readonly canCreate: boolean;
}

/** Builds a provider for a credential document; injected so tests can wrap or fail providers. */
export type ProviderFactory = (secret: CredentialSecret) => KeyProvider;
