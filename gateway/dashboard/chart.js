// A small bar chart of documents in/out per minute, drawn on a <canvas> (no library).

const COLORS = {in: '#2f6fdf', out: '#e08a1e', grid: '#d9dee7', text: '#5b6474'};

function niceMax(value) {
  if (value <= 5) return 5;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * magnitude >= value) return step * magnitude;
  }
  return 10 * magnitude;
}

function label(iso) {
  const at = new Date(iso);
  return `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
}

/**
 * Draw `minutes` ([{at, in, out}], oldest first) on `canvas`; the canvas keeps the totals in
 * data-total-in / data-total-out (and the point count in data-points) for scripts and tests.
 */
export function drawChart(canvas, minutes) {
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || canvas.width;
  const cssHeight = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);

  const pad = {left: 40, right: 8, top: 10, bottom: 22};
  const width = cssWidth - pad.left - pad.right;
  const height = cssHeight - pad.top - pad.bottom;
  const peak = niceMax(Math.max(0, ...minutes.map((m) => Math.max(m.in, m.out))));

  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.top + height - (height * i) / 4;
    ctx.strokeStyle = COLORS.grid;
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(y) + 0.5);
    ctx.lineTo(pad.left + width, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = 'right';
    ctx.fillText(String(Math.round((peak * i) / 4)), pad.left - 6, y);
  }

  const slot = minutes.length ? width / minutes.length : width;
  const bar = Math.max(1, (slot - 2) / 2);
  minutes.forEach((m, i) => {
    const x = pad.left + i * slot + 1;
    for (const [kind, offset] of [['in', 0], ['out', bar]]) {
      const value = m[kind];
      if (!value) continue;
      const h = Math.max(1, (height * value) / peak);
      ctx.fillStyle = COLORS[kind];
      ctx.fillRect(x + offset, pad.top + height - h, bar, h);
    }
  });

  ctx.fillStyle = COLORS.text;
  ctx.textBaseline = 'top';
  const every = Math.max(1, Math.ceil(minutes.length / 6));
  minutes.forEach((m, i) => {
    if (i % every !== 0 && i !== minutes.length - 1) return;
    ctx.textAlign = i === minutes.length - 1 ? 'right' : 'center';
    const x = i === minutes.length - 1 ? pad.left + width : pad.left + (i + 0.5) * slot;
    ctx.fillText(label(m.at), x, pad.top + height + 6);
  });

  const totalIn = minutes.reduce((sum, m) => sum + m.in, 0);
  const totalOut = minutes.reduce((sum, m) => sum + m.out, 0);
  canvas.dataset.totalIn = String(totalIn);
  canvas.dataset.totalOut = String(totalOut);
  canvas.dataset.points = String(minutes.length);
  return {totalIn, totalOut};
}
