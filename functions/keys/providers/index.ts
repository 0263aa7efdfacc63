import type { KeyProvider, ProviderFactory } from '../provider';
import type { CredentialSecret } from '../secret';
import { civicrmProvider } from './civicrm';
import { commcareProvider } from './commcare';
import { conduceProvider } from './conduce';

/** The production factory: one provider per `provider` value in the secret. */
export const defaultProviderFactory: ProviderFactory = (secret: CredentialSecret): KeyProvider => {
  switch (secret.provider) {
    case 'commcare':
      return commcareProvider(secret);
    case 'conduce':
      return conduceProvider(secret);
    case 'civicrm':
      return civicrmProvider(secret);
  }
};

export { civicrmProvider, commcareProvider, conduceProvider };
