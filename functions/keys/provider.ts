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
  /** Conduce: the key's fingerprint, never the key. */
  readonly providerKeyId?: string;
  readonly createdAt?: string;
}

export interface KeyProvider {
  /**
   * Creates the key named `name`. `attempt` (the rotation's token) makes it idempotent: a key this
   * attempt already created is returned instead of a second one; a key someone else created with the
   * same name is never adopted.
   */
  create(name: string, attempt: string): Promise<IssuedKey>;
  /** Pushes a created key to the provider where creation is local (CiviCRM). Safe to repeat. */
  set?(issued: IssuedKey): Promise<void>;
  /**
   * Resolves when `key` authenticates and reaches every configured project; throws KeyTestError.
   * `providerKeyId`, when known, is checked too (CiviCRM: the contact the key must authenticate).
   */
  test(key: string, providerKeyId?: string): Promise<void>;
  /** Revokes a key by its provider id (never by name alone). Resolves when it is already gone. */
  revoke(providerKeyId: string): Promise<void>;
  /** Whether the provider still lists the key with this id (false when it cannot tell). */
  isLive?(providerKeyId: string): Promise<boolean>;
  /** Keys the provider knows for this user (names and ids only). */
  list(): Promise<ListedKey[]>;
  /** False when revocation needs a person (CommCare HQ). */
  readonly canRevoke: boolean;
  /** False when a person has to create the key (CommCare HQ). */
  readonly canCreate: boolean;
}

/** Builds a provider for a credential document; injected so tests can wrap or fail providers. */
export type ProviderFactory = (secret: CredentialSecret) => KeyProvider;
