// The redis-wsgi-cache dashboard: a view over its JSON API (api/stats,
// api/inspect, api/purge). Everything shown is set as text (textContent),
// never as HTML: URLs, tags and headers come from the cached responses.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const SERIES = [
    ["HIT", "hit", "#2e7d32"],
    ["STALE", "stale", "#9e9d24"],
    ["MISS", "miss", "#c62828"],
    ["BYPASS", "bypass", "#5c6bc0"],
  ];
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const tokenRequired = document.querySelector('meta[name="token-required"]').content === "true";
  const byId = (id) => document.getElementById(id);
  let rates = null;
  let ratio = null;
  let lastUpdate = 0;
  let updates = 0;
  let pendingPurge = null;

  function element(tag, text, className) {
    const made = document.createElement(tag);
    if (text !== undefined && text !== null) made.textContent = String(text);
    if (className) made.className = className;
    return made;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      if (cell instanceof Node) {
        const td = document.createElement("td");
        td.appendChild(cell);
        tr.appendChild(td);
      } else if (typeof cell === "number") {
        tr.appendChild(element("td", number(cell), "n"));
      } else {
        tr.appendChild(element("td", cell));
      }
    }
    return tr;
  }

  function fill(tableId, rows, empty) {
    const body = byId(tableId).querySelector("tbody");
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = element("td", empty, "empty");
      td.colSpan = byId(tableId).querySelectorAll("thead th").length;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const cells of rows) body.appendChild(row(cells));
  }

  function number(value) {
    return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + " %";
  }

  function bytes(value) {
    if (value === null || value === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let amount = value;
    let unit = 0;
    while (amount >= 1024 && unit < units.length - 1) {
      amount /= 1024;
      unit += 1;
    }
    return (unit ? amount.toFixed(1) : String(amount)) + " " + units[unit];
  }

  function when(seconds) {
    if (!seconds) return "never";
    const date = new Date(seconds * 1000);
    const ago = Math.max(0, Math.round(Date.now() / 1000 - seconds));
    const text = ago < 120 ? ago + " s ago" : ago < 7200 ? Math.round(ago / 60) + " min ago" : Math.round(ago / 3600) + " h ago";
    return date.toLocaleTimeString("en-GB") + " (" + text + ")";
  }

  function chartSize(container) {
    return { width: Math.max(300, container.clientWidth), height: 220 };
  }

  function drawCharts(history) {
    const times = history.minutes;
    const rateData = [times, ...SERIES.map(([name]) => history.per_second[name])];
    const ratioData = [times, history.hit_ratio];
    if (rates === null) {
      const rateBox = byId("chart-rates");
      rates = new uPlot(
        {
          ...chartSize(rateBox),
          series: [{}, ...SERIES.map(([, label, stroke]) => ({ label, stroke, width: 2, value: (u, v) => (v === null ? "–" : v.toFixed(2) + "/s") }))],
          axes: [{}, { label: "per second", size: 60 }],
          scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
        },
        rateData,
        rateBox,
      );
      const ratioBox = byId("chart-ratio");
      ratio = new uPlot(
        {
          ...chartSize(ratioBox),
          series: [{}, { label: "hit ratio", stroke: "#2e7d32", fill: "rgba(46,125,50,0.12)", width: 2, points: { show: true, size: 5 }, value: (u, v) => percent(v) }],
          axes: [{}, { label: "hit ratio", size: 60, values: (u, ticks) => ticks.map((v) => Math.round(v * 100) + "%") }],
          scales: { y: { range: [0, 1] } },
        },
        ratioData,
        ratioBox,
      );
    } else {
      rates.setData(rateData);
      ratio.setData(ratioData);
    }
    byId("chart-rates").dataset.points = String(times.length);
    byId("chart-rates").dataset.updates = String(updates);
  }

  function show(stats) {
    const history = stats.history;
    byId("where").textContent = "prefix " + stats.prefix + " on " + stats.redis_url;
    byId("ratio-hour").textContent = percent(history.totals.hit_ratio);
    const last = history.minutes.length - 1;
    const now = SERIES.reduce((sum, [name]) => sum + (history.per_second[name][last] || 0), 0);
    byId("rate-now").textContent = now.toFixed(1);
    byId("ratio-all").textContent = percent(stats.totals.hit_ratio);
    byId("served-all").textContent = number(stats.totals.served);
    drawCharts(history);

    const totals = history.totals;
    const totalsRow = byId("totals").querySelector("tbody tr");
    totalsRow.replaceChildren(
      ...["hit", "stale", "miss", "bypass", "stored", "refreshed", "invalidated", "purged"].map((name) => {
        const td = element("td", number(totals[name]), "n");
        td.dataset.outcome = name;
        return td;
      }),
    );
    fill(
      "reasons",
      Object.entries(history.reasons).map(([name, count]) => [name.toLowerCase(), count]),
      "nothing counted with a reason over this span",
    );

    const redis = stats.redis;
    const facts = [
      ["memory used", bytes(redis.used_memory) + (redis.maxmemory ? " of " + bytes(redis.maxmemory) + " (" + percent(redis.used_memory / redis.maxmemory) + ")" : " (no maxmemory)")],
      ["URLs stored", number(redis.entries)],
      ["bytes per entry", redis.bytes_per_entry === null ? "–" : number(redis.bytes_per_entry) + " B (memory beyond an empty Redis's, over URLs stored)"],
      ["URL index buckets", number(redis.url_buckets)],
      ["tag indexes", number(redis.tag_indexes)],
      ["eviction policy", redis.policy],
      ["PING", redis.latency_ms.toFixed(1) + " ms"],
    ];
    const list = byId("redis");
    list.replaceChildren();
    for (const [name, value] of facts) {
      list.appendChild(element("dt", name));
      list.appendChild(element("dd", value));
    }
    const policy = byId("policy");
    policy.textContent = redis.policy_advice;
    policy.className = "advice " + redis.policy_level;

    fill(
      "processes",
      stats.processes.map((p) => [
        p.name,
        p.driver || "–",
        element("span", p.breaker || "–", p.breaker === "open" ? "bad" : "good"),
        p.redis_failures || 0,
        when(p.last_failure),
        p.pending_purges || 0,
        p.near_max_entries ? number(p.near_entries) + " entries, " + bytes(p.near_bytes) + " of " + bytes(p.near_max_bytes) + (p.near_online ? "" : " (offline)") : "off",
        when(p.seen),
      ]),
      "no process has reported in the last seconds (processes report while they serve requests, every stats_interval)",
    );
    fill(
      "missed",
      stats.missed.map((m) => [lookupLink(m.url), m.misses]),
      "no miss counted this hour",
    );
    fill(
      "tags",
      stats.tags.map((t) => [t.tag === null ? element("em", "(a tag whose entries have gone)") : tagLink(t.tag), t.entries]),
      "no tagged response stored",
    );
    fill(
      "purges",
      stats.purges.map((p) => [when(p.at), p.what, p.target || "everything", p.soft ? "soft" : "hard", p.count, p.origin]),
      "no purge yet",
    );
  }

  function lookupLink(url) {
    const button = element("button", url, "link");
    button.type = "button";
    button.addEventListener("click", () => {
      byId("lookup-url").value = url;
      lookUp(url);
    });
    return button;
  }

  function tagLink(tag) {
    const button = element("button", tag, "link");
    button.type = "button";
    button.addEventListener("click", () => {
      document.querySelector('#purge input[name="what"][value="tags"]').checked = true;
      byId("purge-target").value = tag;
      byId("purge-target").focus();
    });
    return button;
  }

  async function refresh() {
    const span = byId("span").value;
    try {
      const response = await fetch("api/stats?minutes=" + encodeURIComponent(span), { headers: { Accept: "application/json" } });
      const payload = await response.json();
      if (!response.ok) throw new Error(payload.error || response.statusText);
      updates += 1;
      show(payload);
      lastUpdate = Date.now();
      byId("error").hidden = true;
      document.body.dataset.state = "ok";
      byId("status").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    } catch (error) {
      document.body.dataset.state = "error";
      byId("error").hidden = false;
      byId("error").textContent = "Cannot read the cache: " + error.message + ". Retrying every " + REFRESH_MS / 1000 + " s.";
      byId("status").textContent = lastUpdate ? "stale since " + new Date(lastUpdate).toLocaleTimeString("en-GB") : "no data";
    }
  }

  async function lookUp(url) {
    const result = byId("lookup-result");
    const variants = byId("variants");
    variants.replaceChildren();
    result.textContent = "looking up…";
    try {
      const response = await fetch("api/inspect?url=" + encodeURIComponent(url));
      const payload = await response.json();
      if (!response.ok) throw new Error(payload.error || response.statusText);
      result.textContent = payload.entries.length
        ? payload.entries.length + " stored response" + (payload.entries.length === 1 ? "" : "s") + " for " + payload.url
        : "nothing stored for " + payload.url;
      for (const entry of payload.entries) variants.appendChild(variant(entry));
    } catch (error) {
      result.textContent = "Lookup failed: " + error.message;
    }
  }

  function variant(entry) {
    const box = element("div", null, "variant");
    if (entry.readable === false) {
      box.appendChild(element("p", entry.key + ": not readable by this version"));
      return box;
    }
    const facts = element("dl", null, "facts");
    for (const [name, value] of [
      ["status", entry.status],
      ["age", entry.age + " s"],
      ["ttl", entry.ttl + " s" + (entry.ttl < 0 ? " (stale)" : "")],
      ["kept by Redis", entry.redis_ttl + " s"],
      ["vary", entry.vary.join(", ") || "–"],
      ["tags", entry.tags.join(" ") || "–"],
      ["etag", entry.etag || "–"],
      ["last modified", entry.last_modified || "–"],
      ["body", number(entry.body_bytes) + " B"],
      ["key", entry.key],
    ]) {
      facts.appendChild(element("dt", name));
      facts.appendChild(element("dd", value));
    }
    box.appendChild(facts);
    const headers = element("table", null, "headers");
    headers.appendChild(element("caption", "headers"));
    const body = document.createElement("tbody");
    for (const [name, value] of entry.headers) body.appendChild(row([name, value]));
    headers.appendChild(body);
    box.appendChild(headers);
    return box;
  }

  function purgeRequest() {
    const what = document.querySelector('#purge input[name="what"]:checked').value;
    const target = byId("purge-target").value.trim();
    const soft = byId("purge-soft").checked;
    const body = { soft };
    let description;
    if (what === "all") {
      body.all = true;
      description = "everything this cache stored";
    } else if (!target) {
      return null;
    } else if (what === "prefix") {
      body.prefix = target;
      description = "every URL under " + target;
    } else {
      body[what] = [target];
      description = (what === "tags" ? "tag " : "URL ") + target;
    }
    return { body, description: (soft ? "Mark stale: " : "Purge: ") + description + "?" };
  }

  async function sendPurge(request) {
    const result = byId("purge-result");
    const headers = { "Content-Type": "application/json", "X-CSRF-Token": csrfToken };
    const token = byId("purge-token").value;
    if (token) headers.Authorization = "Bearer " + token;
    result.textContent = "purging…";
    try {
      const response = await fetch("api/purge", { method: "POST", headers, body: JSON.stringify(request.body) });
      const payload = await response.json();
      if (!response.ok) throw new Error(payload.error || response.statusText);
      result.textContent = (request.body.soft ? "marked stale " : "purged ") + payload.purged + " response" + (payload.purged === 1 ? "" : "s");
      result.className = "result good";
      refresh();
    } catch (error) {
      result.textContent = "Purge failed: " + error.message;
      result.className = "result bad";
    }
  }

  byId("lookup").addEventListener("submit", (event) => {
    event.preventDefault();
    lookUp(byId("lookup-url").value.trim());
  });
  byId("purge").addEventListener("submit", (event) => {
    event.preventDefault();
    pendingPurge = purgeRequest();
    if (pendingPurge === null) {
      byId("purge-result").textContent = "Name what to purge.";
      return;
    }
    byId("confirm-text").textContent = pendingPurge.description;
    byId("confirm").hidden = false;
    byId("confirm-yes").focus();
  });
  byId("confirm-yes").addEventListener("click", () => {
    byId("confirm").hidden = true;
    if (pendingPurge !== null) sendPurge(pendingPurge);
    pendingPurge = null;
  });
  byId("confirm-no").addEventListener("click", () => {
    byId("confirm").hidden = true;
    pendingPurge = null;
    byId("purge-result").textContent = "Cancelled.";
  });
  byId("span").addEventListener("change", refresh);
  byId("token-label").hidden = !tokenRequired;
  window.addEventListener("resize", () => {
    if (rates !== null) {
      rates.setSize(chartSize(byId("chart-rates")));
      ratio.setSize(chartSize(byId("chart-ratio")));
    }
  });

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
