// What CONTRACT.md allows for an experiment in its current state. Each rule returns
// {allowed, reason}; the UI disables a control whose action is refused and shows why.
// The server stays the authority: these rules only spare the operator a round trip.

const ok = { allowed: true, reason: "" };
const no = (reason) => ({ allowed: false, reason });

function variantsOf(exp) {
  return Array.isArray(exp && exp.variants) ? exp.variants : [];
}

function apiKindOf(version) {
  return version && version.upstream ? version.upstream.api_kind : undefined;
}

/** Why activation would be refused (null when it would not), for draft or paused. */
export function activationBlocker(exp) {
  if (exp.is_archived) return "an archived experiment cannot be activated; unarchive it first";
  const variants = variantsOf(exp);
  if (variants.length < 2) {
    return `activation needs at least 2 variants (it has ${variants.length})`;
  }
  const missing = variants.filter((v) => !v.current_version).map((v) => v.label);
  if (missing.length) {
    return `activation needs a current version for every variant; missing: ${missing.join(", ")}`;
  }
  const kinds = new Set(variants.map((v) => apiKindOf(v.current_version)));
  if (kinds.size > 1) {
    return `all variants must share one upstream.api_kind; found ${[...kinds].sort().join(", ")}`;
  }
  return null;
}

export function canActivate(exp) {
  if (exp.status !== "draft") return no("only a draft experiment can be activated");
  const blocker = activationBlocker(exp);
  return blocker ? no(blocker) : ok;
}

export function canResume(exp) {
  if (exp.status !== "paused") return no("only a paused experiment can be resumed");
  const blocker = activationBlocker(exp);
  return blocker ? no(blocker) : ok;
}

export function canPause(exp) {
  return exp.status === "active" ? ok : no("only an active experiment can be paused");
}

export function canComplete(exp) {
  return exp.status === "active" || exp.status === "paused"
    ? ok
    : no("only an active or paused experiment can be completed");
}

export function canArchive(exp) {
  if (exp.is_archived) return no("already archived");
  if (exp.status === "active") return no("an active experiment cannot be archived; pause or complete it first");
  return ok;
}

export function canUnarchive(exp) {
  return exp.is_archived ? ok : no("not archived");
}

export function canDelete(exp) {
  return exp.status === "draft" ? ok : no(`only a draft can be deleted (it is ${exp.status})`);
}

export function canEditPublicId(exp) {
  return exp.status === "draft" ? ok : no("the public model id can be changed only while draft");
}

export function canChangeVariants(exp) {
  return exp.status === "draft" ? ok : no("variants can be added or removed only while draft");
}

export function canEditLabel(exp) {
  return exp.status === "completed" ? no("labels cannot change on a completed experiment") : ok;
}

export function canAddVersion(exp) {
  return exp.status === "completed" ? no("a completed experiment takes no new versions") : ok;
}

export function canRotateKey(exp, variant) {
  if (exp.status === "completed") return no("a completed experiment takes no new versions");
  if (!variant.current_version) return no("this variant has no current version; create one first");
  return ok;
}

/** The api_kind a hot-swap must keep (active or paused experiments), or null. */
export function requiredApiKind(exp) {
  if (exp.status !== "active" && exp.status !== "paused") return null;
  const kinds = new Set(variantsOf(exp).map((v) => apiKindOf(v.current_version)).filter(Boolean));
  return kinds.size === 1 ? [...kinds][0] : null;
}
