import { DateTime } from 'luxon';

/** A daily window, in the user's local wall-clock time ("HH:MM"); it may cross midnight. */
export interface QuietHours {
  start: string;
  end: string;
}

export const clockTime = /^([01]\d|2[0-3]):([0-5]\d)$/;

const minutesOf = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** Parses the stored form "22:00-07:00"; anything else is no quiet hours. */
export function parseQuietHours(stored: string | undefined): QuietHours | undefined {
  if (!stored) return undefined;
  const [start, end] = stored.split('-');
  return start && end && clockTime.test(start) && clockTime.test(end) && start !== end ? { start, end } : undefined;
}

/**
 * When the quiet window that `nowMs` falls in ends (ms since epoch), or null when it is not quiet
 * for someone in `timeZone`. The end is the next local `end` wall-clock time, so a DST change
 * in between moves it by the hour it should; an end that falls in a DST gap moves forward.
 */
export function quietUntil(quiet: QuietHours, timeZone: string, nowMs: number): number | null {
  let local = DateTime.fromMillis(nowMs, { zone: timeZone });
  if (!local.isValid) local = DateTime.fromMillis(nowMs, { zone: 'UTC' });
  const minute = local.hour * 60 + local.minute;
  const start = minutesOf(quiet.start);
  const end = minutesOf(quiet.end);
  const inside = start < end ? minute >= start && minute < end : minute >= start || minute < end;
  if (!inside) return null;
  const endToday = { hour: Math.floor(end / 60), minute: end % 60, second: 0, millisecond: 0 };
  let until = local.set(endToday);
  if (until.toMillis() <= nowMs) until = local.plus({ days: 1 }).set(endToday);
  return until.toMillis();
}
