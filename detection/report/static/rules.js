// The pass/fail rules of the report page over the compact data, the same as
// detection/report/decisions.py: a detection fails the part when its score is >= its class
// threshold; at a class's own job threshold the job's stored decision is kept (the job compared
// unrounded float32 scores; the data keeps the record's rounded ones).
"use strict";
window.ReportRules = function (D) {
  const gt = D.gt;
  const N = D.paths.length, K = D.classes.length, M = D.cls.length;
  const job = Float64Array.from(D.jobThresholds);
  const th = Float64Array.from(D.jobThresholds);
  const cls = Int32Array.from(D.cls), score = Float64Array.from(D.score);
  const off = Int32Array.from(D.offsets);
  const flip = new Uint8Array(M);
  for (const j of D.flip) flip[j] = 1;
  const outcome = gt ? Int8Array.from(gt.outcome) : null;  // per labelled detection
  const detOutcome = new Int8Array(M).fill(-1);            // aligned with every detection
  const fails = new Uint8Array(N), border = new Uint8Array(N);
  const top = new Float64Array(N);
  if (gt) {
    let k = 0;
    for (let i = 0; i < N; i++) {
      if (!gt.labelled[i]) continue;
      for (let j = off[i]; j < off[i + 1]; j++) detOutcome[j] = outcome[k++];
    }
  }

  function detFails(j) {
    const c = cls[j];
    if (th[c] === job[c]) return (score[j] >= job[c]) !== (flip[j] === 1);
    return score[j] >= th[c];
  }

  // Every image's decision, borderline flag and sort score at the current thresholds.
  function recompute() {
    const band = D.band;
    const res = { passed: 0, failed: 0, escapes: 0, falseRejects: 0, byClass: new Array(K).fill(0),
      tp: new Array(K).fill(0), fp: new Array(K).fill(0) };
    const seen = new Uint8Array(K);
    for (let i = 0; i < N; i++) {
      let f = false, b = false, best = -1, bestBorder = -1;
      seen.fill(0);
      for (let j = off[i]; j < off[i + 1]; j++) {
        const c = cls[j], s = score[j];
        if (detFails(j)) { f = true; if (s > best) best = s; seen[c] = 1; }
        else if (s >= th[c] - band && s > bestBorder) { bestBorder = s; }
        if (gt && detOutcome[j] >= 0 && detOutcome[j] !== 2 && s >= th[c]) {
          if (detOutcome[j] === 1) res.tp[c]++; else res.fp[c]++;
        }
      }
      if (f) { b = false; } else { b = bestBorder >= 0; }
      fails[i] = f ? 1 : 0; border[i] = b ? 1 : 0;
      top[i] = f ? best : b ? bestBorder : (off[i + 1] > off[i] ? maxScore(i) : -1);
      if (f) { res.failed++; for (let c = 0; c < K; c++) res.byClass[c] += seen[c]; } else res.passed++;
      if (gt && gt.defective[i] >= 0) {
        if (gt.defective[i] === 1 && !f) res.escapes++;
        if (gt.defective[i] === 0 && f) res.falseRejects++;
      }
    }
    return res;
  }
  function maxScore(i) {
    let m = -1;
    for (let j = off[i]; j < off[i + 1]; j++) if (score[j] > m) m = score[j];
    return m;
  }

  function wilson(k, n) {
    if (!n) return null;
    const z = 1.959963984540054, p = k / n, z2 = z * z;
    const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
    const half = z * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n);
    return [Math.max(0, centre - half), Math.min(1, centre + half)];
  }

  return { N, K, M, job, th, cls, score, off, gt, detOutcome, fails, border, top, detFails,
    recompute, wilson };
};
