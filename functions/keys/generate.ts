import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * A strong key: `bytes` bytes of crypto.randomBytes written in base 62 (alphanumeric only, because
 * CiviCRM keys travel in headers and form fields where punctuation invites quoting bugs).
 * 32 bytes = 256 bits, 43 characters.
 */
export function generateKey(bytes = 32): string {
  if (bytes < 32) throw new RangeError(`generateKey needs at least 32 random bytes, got ${bytes}`);
  let n = BigInt(`0x${randomBytes(bytes).toString('hex')}`);
  const length = Math.ceil((bytes * 8) / Math.log2(62));
  let out = '';
  for (let i = 0; i < length; i += 1) {
    out = ALPHABET[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out;
}
