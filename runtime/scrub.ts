/**
 * Personal data and secrets inside free text (provider error messages, reasons): addresses, phone
 * numbers, device tokens and credentials in URLs. Applied wherever error text is logged or stored.
 */
const patterns: [RegExp, string][] = [
  // Credentials in URLs first: smtp://user:pass@host.
  [/([a-z][a-z0-9+.-]*:\/\/)[^\s/@:]+:[^\s/@]+@/gi, '$1[credentials]@'],
  [/[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/g, '[email]'],
  // E.164 numbers as providers quote them (dates and counts in reasons are left alone).
  [/\+\d{7,15}\b/g, '[phone]'],
  // Device tokens: long runs of hex or base64url (APNs tokens are 64 hex, FCM tokens ~150 characters).
  [/\b[A-Za-z0-9_:-]{32,}\b/g, '[token]'],
];

/** The text with addresses, phone numbers, tokens and URL credentials replaced by what they are. */
export function scrub(text: string): string {
  if (!text) return text;
  let out = text;
  for (const [pattern, replacement] of patterns) out = out.replace(pattern, replacement);
  return out;
}
