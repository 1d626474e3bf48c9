/* Downloads: a chart's data as CSV, a chart as PNG (its canvas on white, with a title). */

export function toCsv(rows, columns) {
  const cell = (v) => {
    if (v === null || v === undefined) { return ""; }
    const s = String(v);
    return /[",\n]/.test(s) ? "\"" + s.replace(/"/g, "\"\"") + "\"" : s;
  };
  return [columns.join(",")].concat(rows.map((r) => columns.map((c) => cell(r[c])).join(","))).join("\n") + "\n";
}

export function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

export function downloadCsv(name, rows, columns) {
  download(name, new Blob([toCsv(rows, columns)], { type: "text/csv" }));
}

/* The uPlot chart `u` as a PNG with `title` above it. */
export function downloadPng(name, u, title) {
  const src = u.ctx.canvas;
  const pad = 36;
  const out = document.createElement("canvas");
  out.width = src.width;
  out.height = src.height + pad;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.fillStyle = "#1a202c";
  ctx.font = "bold 18px sans-serif";
  ctx.fillText(title, 12, 24);
  ctx.drawImage(src, 0, pad);
  out.toBlob((blob) => download(name, blob), "image/png");
}
