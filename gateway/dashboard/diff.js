// Field-by-field comparison of a ConflictRecord's sides (top-level fields of the bodies).

/** A stable JSON form (object keys sorted) so equal values compare equal. */
export function canonical(value) {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonical(v) ?? 'null').join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
}

/** How a value is shown in a diff cell ("" for a field that is absent). */
export function display(value) {
  if (value === undefined) return '';
  if (typeof value === 'string') return value;
  return JSON.stringify(value, null, 1);
}

/**
 * One row per field present on any side, sorted by name:
 * {field, ancestor, theirs, mine, mineChanged, theirsChanged, differs, clash}.
 * With an ancestor, a side "changed" a field when it differs from the ancestor's value and a
 * clash is both sides changing it differently (what a three-way merge refuses).  Without an
 * ancestor, only "differs" (mine vs theirs) is known.
 */
export function fieldDiff(mine, theirs, ancestor) {
  const sides = [mine, theirs, ancestor].map((b) => (b && typeof b === 'object' && !Array.isArray(b) ? b : {}));
  const hasAncestor = ancestor !== null && ancestor !== undefined;
  const fields = [...new Set(sides.flatMap((b) => Object.keys(b)))].sort();
  return fields.map((field) => {
    const [m, t, a] = sides.map((b) => (Object.prototype.hasOwnProperty.call(b, field) ? b[field] : undefined));
    const [cm, ct, ca] = [m, t, a].map(canonical);
    const differs = cm !== ct;
    const mineChanged = hasAncestor ? cm !== ca : differs;
    const theirsChanged = hasAncestor ? ct !== ca : differs;
    return {
      field,
      ancestor: a,
      theirs: t,
      mine: m,
      mineChanged,
      theirsChanged,
      differs,
      clash: hasAncestor && mineChanged && theirsChanged && differs,
    };
  });
}
